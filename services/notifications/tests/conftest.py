import pytest

from backhaul_devstack.smtp_sink import MailSink
from backhaul_kit.testing import on_test_broker, running
from notifications.bootstrap import bootstrap
from notifications.config import NotificationsSettings


@pytest.fixture
def mail_sink(request, tmp_path):
    """The development mail sink; parametrized indirectly, its options (`drop_repeats`)."""
    sink = MailSink.on_free_ports(tmp_path / "mail", **getattr(request, "param", {}))
    yield sink
    sink.stop()


@pytest.fixture
def settings(database_url, kafka_bootstrap, topic_prefix, mail_sink) -> NotificationsSettings:
    return on_test_broker(
        NotificationsSettings,
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        smtp_host="127.0.0.1",
        smtp_port=mail_sink.controller.port,
        staff_email="noc@isp.example",
        email_max_attempts=3,
        email_retry_backoff_seconds=0.2,
        email_retry_backoff_max_seconds=1.0,
        email_poll_interval_seconds=0.1,
    )


@pytest.fixture
async def service(settings):
    runtime = bootstrap(settings)
    async with running(runtime) as client:
        runtime.test_client = client
        yield runtime, client
