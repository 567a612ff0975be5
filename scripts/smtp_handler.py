"""The handler of the tests' SMTP server (scripts/smtp.sh): delivers every message it accepts into
a maildir, as aiosmtpd's own Mailbox does, and refuses recipients whose local part starts with
`refuse` (550, permanent) or `busy` (451, try later), so that the email adapter's handling of
refusals is tested against a real SMTP conversation."""

from aiosmtpd.handlers import Mailbox


class RefusingMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("busy"):
            return "451 4.3.2 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"
