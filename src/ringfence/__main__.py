"""`python -m ringfence`: the same as the `ringfence` command (the parent starts SIP workers so)."""

from ringfence.cli import main

main()
