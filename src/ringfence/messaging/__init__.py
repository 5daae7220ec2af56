"""Messages: held for devices that sleep, delivered when they register (RFC 3428).

Issue #4 brings the holding: a MESSAGE for a user whose devices all sleep (woken by push)
is stored durably, the devices are told by an alert push, and the message goes to the first
device that registers. The history of every device and the fetch API are issue #6.
"""
