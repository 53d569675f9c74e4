"""E-mail to a person whose job ended, when the relay has an SMTP server configured.

    mailer = Mailer(settings, read_file, metrics, record=store_status)
    task = asyncio.create_task(mailer.run())    # in the app's cleanup_ctx
    mailer.notify(job)                          # from the job service; never blocks
    mailer.status(job.id)                       # pending / sent / failed / limited

Sending runs `smtplib` in a worker thread, one message at a time, so the job pipeline never
waits for a mail server. A failed send is tried again after each of `retry_delays`; the
wait is a timer, so one unreachable server does not hold back the messages behind it.
Any other error with one message (one that cannot be built, say) fails that message at
once and is logged; the worker goes on with the next.
Every status change also goes to `record`, which the relay stores with the job: after a
restart the status is still shown, and messages that were still pending are sent then.

One address gets at most `per_recipient_hour` messages in any hour (counted on the address
in lower case, by wall time); beyond that the job's e-mail status is `limited` and nothing
is sent. The count is kept in memory and rebuilt at start from the stored jobs' e-mail
statuses and finish times (`resume`), so a restart does not reset it.
"""

import asyncio
import contextlib
import enum
import logging
import smtplib
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import make_msgid

from relay.config import Config
from relay.logs import event
from relay.metrics import Metrics
from relay.model import JobRecord, JobState, result_name
from relay.ratelimits import SlidingWindow

log = logging.getLogger(__name__)

RETRY_DELAYS = (5.0, 30.0, 120.0)
SMTP_TIMEOUT = 30.0
MAX_STATUSES = 10_000
RECIPIENT_WINDOW = 3600.0


class EmailStatus(enum.StrEnum):
    """Where a job's e-mail is."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    LIMITED = "limited"
    """Not sent: the address already had its messages for this hour."""


@dataclass(frozen=True)
class MailSettings:
    """The SMTP server and what the messages link to."""

    host: str
    port: int
    sender: str
    public_url: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    attach_max_bytes: int = 5 * 1024 * 1024
    per_recipient_hour: int = 3

    @classmethod
    def from_config(cls, config: Config) -> "MailSettings | None":
        """The settings, or None when the relay sends no e-mail."""
        if config.smtp_host is None or config.smtp_from is None or config.public_url is None:
            return None
        return cls(
            host=config.smtp_host,
            port=config.smtp_port,
            sender=config.smtp_from,
            public_url=config.public_url,
            user=config.smtp_user,
            password=config.smtp_password,
            starttls=config.smtp_starttls,
            attach_max_bytes=int(config.smtp_attach_max_mb * 1024 * 1024),
            per_recipient_hour=config.mail_per_recipient_hour,
        )


@dataclass(frozen=True)
class Notice:
    """One message to send: which job, to whom, how it ended."""

    job_id: str
    to: str
    state: JobState
    error: str | None
    result_file: str | None
    filename: str | None
    attempt: int = 0


def build_message(settings: MailSettings, notice: Notice, png: bytes | None) -> EmailMessage:
    """The message for a finished or failed job; `png` is attached when given."""
    job_url = f"{settings.public_url}/api/jobs/{notice.job_id}"
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = notice.to
    msg["Message-ID"] = make_msgid(domain="stylerelay")
    if notice.state is JobState.DONE:
        msg["Subject"] = "Your Stylerelay picture is ready"
        body = (
            "Your style transfer has finished.\n\n"
            f"Download the picture: {job_url}/result\n"
            f"The job: {job_url}\n\n"
            "The relay keeps results for a limited time only; save the picture soon.\n"
        )
        if png is not None:
            body += "The picture is also attached to this message.\n"
    else:
        msg["Subject"] = "Your Stylerelay job failed"
        body = (
            "Your style transfer could not be finished.\n\n"
            f"Reason: {notice.error or 'unknown'}\n"
            f"The job: {job_url}\n\n"
            "You may try again with a smaller picture or fewer epochs.\n"
        )
    msg.set_content(body)
    if png is not None:
        name = result_name(notice.job_id, notice.filename)
        msg.add_attachment(png, maintype="image", subtype="png", filename=name)
    return msg


def recipient_key(address: str) -> str:
    """The address as the per-recipient limit counts it: trimmed, in lower case."""
    return address.strip().lower()


def send_message(settings: MailSettings, message: EmailMessage) -> None:
    """Deliver one message with smtplib (blocking; run it in a thread)."""
    with smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT) as smtp:
        if settings.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.user is not None and settings.password is not None:
            smtp.login(settings.user, settings.password)
        smtp.send_message(message)


class Mailer:
    """A queue of notices and the one worker that sends them."""

    def __init__(
        self,
        settings: MailSettings,
        read_file: Callable[[str], bytes],
        metrics: Metrics,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        record: Callable[[str, EmailStatus], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.record = record
        self.read_file = read_file
        self.metrics = metrics
        self.retry_delays = tuple(retry_delays)
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._statuses: dict[str, EmailStatus] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._sending = 0
        self._recipients = SlidingWindow(settings.per_recipient_hour, RECIPIENT_WINDOW)

    @property
    def waiting(self) -> int:
        """Messages queued, being sent or waiting for a retry."""
        return self._queue.qsize() + len(self._timers) + self._sending

    def status(self, job_id: str) -> EmailStatus | None:
        """The job's e-mail status, or None if none was asked for (or it was forgotten)."""
        return self._statuses.get(job_id)

    def notify(self, job: JobRecord) -> None:
        """Queue the message for a job that ended (or mark it `limited` if its address had
        enough this hour); cancelled jobs and no address: nothing."""
        if job.email is None or job.state not in (JobState.DONE, JobState.FAILED):
            return
        if not self._recipients.take(recipient_key(job.email), self.clock()):
            self._set(job.id, EmailStatus.LIMITED)
            self.metrics.mails["limited"] += 1
            event(
                log,
                "email_limited",
                "e-mail for job %s not sent: its address had %d this hour",
                job.id,
                self.settings.per_recipient_hour,
                level=logging.WARNING,
                job=job.id,
            )
            return
        self._queue_notice(job)

    def resume(self, pending: Iterable[JobRecord], sent: Iterable[tuple[str, float]]) -> None:
        """After a restart: count the messages of the last hour (`sent`: address and time,
        from `since()` on, `pending` ones included) and queue the `pending` ones again."""
        for address, when in sent:
            self._recipients.add(recipient_key(address), when)
        for job in pending:
            self._queue_notice(job)

    def since(self) -> float:
        """From when messages still count against their address's hourly limit."""
        return self.clock() - RECIPIENT_WINDOW

    def _queue_notice(self, job: JobRecord) -> None:
        assert job.email is not None
        self._set(job.id, EmailStatus.PENDING)
        notice = Notice(job.id, job.email, job.state, job.error, job.result_file, job.filename)
        self._queue.put_nowait(notice)

    def _set(self, job_id: str, status: EmailStatus) -> None:
        if job_id not in self._statuses and len(self._statuses) >= MAX_STATUSES:
            self._statuses.pop(next(iter(self._statuses)))
        self._statuses[job_id] = status
        if self.record is not None:
            self.record(job_id, status)

    async def run(self) -> None:
        """Send queued messages until cancelled."""
        try:
            while True:
                notice = await self._queue.get()
                self._sending = 1
                try:
                    await self._send(notice)
                except Exception as exc:  # one bad message must not silence the rest
                    self._give_up(notice, exc)
                finally:
                    self._sending = 0
        finally:
            for timer in self._timers:
                timer.cancel()

    async def _send(self, notice: Notice) -> None:
        try:
            message = await asyncio.to_thread(self._build, notice)
            await asyncio.to_thread(send_message, self.settings, message)
        except (OSError, smtplib.SMTPException) as exc:
            self._failed(notice, exc)
            return
        self._set(notice.job_id, EmailStatus.SENT)
        self.metrics.mails["sent"] += 1
        event(log, "email_sent", "e-mail for job %s sent", notice.job_id, job=notice.job_id)

    def _build(self, notice: Notice) -> EmailMessage:
        png = None
        if notice.state is JobState.DONE and notice.result_file is not None:
            # A lost result file still gets its message, without the attachment.
            with contextlib.suppress(OSError):
                data = self.read_file(notice.result_file)
                png = data if len(data) <= self.settings.attach_max_bytes else None
        return build_message(self.settings, notice, png)

    def _failed(self, notice: Notice, exc: Exception) -> None:
        if notice.attempt < len(self.retry_delays):
            delay = self.retry_delays[notice.attempt]
            event(
                log,
                "email_retry",
                "e-mail for job %s not sent (attempt %d): %s; retrying in %g s",
                notice.job_id,
                notice.attempt + 1,
                exc,
                delay,
                level=logging.WARNING,
                job=notice.job_id,
            )
            self.metrics.mails["retried"] += 1
            again = replace(notice, attempt=notice.attempt + 1)
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle

            def requeue() -> None:
                self._timers.discard(timer)
                self._queue.put_nowait(again)

            timer = loop.call_later(delay, requeue)
            self._timers.add(timer)
            return
        self._give_up(notice, exc)

    def _give_up(self, notice: Notice, exc: Exception) -> None:
        """The message will not be sent: after its last retry, or an error no retry mends."""
        event(
            log,
            "email_failed",
            "e-mail for job %s failed after %d attempts: %s: %s",
            notice.job_id,
            notice.attempt + 1,
            type(exc).__name__,
            exc,
            level=logging.ERROR,
            job=notice.job_id,
        )
        self.metrics.mails["failed"] += 1
        self._set(notice.job_id, EmailStatus.FAILED)
