"""Sending email: notices to users (privacy.policy, P18), over SMTP with aiosmtplib."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from ringfence.config import SMTPSettings
from ringfence.privacy.policy import MailError


class SMTPMailer:
    """One connection per message: notices go out in batches of minutes, not milliseconds."""

    def __init__(self, settings: SMTPSettings) -> None:
        if settings.host is None:
            raise ValueError("smtp.host is not set")
        self._settings = settings
        self._host = settings.host

    async def send(self, to: str, subject: str, body: str) -> None:
        settings = self._settings
        message = EmailMessage()
        message["From"] = settings.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=settings.port,
                username=settings.username,
                password=settings.password.get_secret_value() if settings.password else None,
                start_tls=settings.starttls and not settings.tls,
                use_tls=settings.tls,
                timeout=settings.timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            # The class only: a server's reply may quote the address.
            raise MailError(type(exc).__name__) from exc
