"""Webhook targets that point inward are refused before any connection; what is sent is signed; every
error a channel's library raises about one message is classified, never a crash."""

import smtplib
import socket
import ssl
import threading
from datetime import datetime, timezone
from urllib.parse import unquote

import orjson
import pytest
import trustme
import urllib3
from django.core import mail
from django.core.mail import BadHeaderError
from standardwebhooks import Webhook, WebhookVerificationError

from core.messages import NotificationContent
from core.webhook_targets import TargetRefused, address_refusal, target_resolve
from delivery import channels
from delivery.channels import (
    EmailChannel,
    Outgoing,
    PermanentChannelError,
    TransientChannelError,
    UnexpectedChannelError,
    WebhookChannel,
    header_value,
    single_line,
)

SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
OLD_SECRET = "whsec_SGVsbG8gd29ybGQgdGhpcyBpcyBvbGQ="

INWARD = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/admin/",
    "http://app.localhost:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://0.0.0.0:{port}/",
    "http://[::1]:{port}/",
    "http://[::]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[2002:7f00:1::]/",  # 6to4 carrying 127.0.0.1
    "http://2130706433:{port}/",  # decimal 127.0.0.1
    "http://0x7f.1:{port}/",  # hex
    "http://0177.0.0.1:{port}/",  # octal
    "http://127.1:{port}/",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/",
    "http:///nohost",
]


def _outgoing(*, title: str = "", message: str = "Tito liked your post", **changes) -> Outgoing:
    content = NotificationContent(kind="like", sender="2", title=title, message=message, data={}, campaign_id=None,
                                  created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    return Outgoing(**{"notification_id": "n-1", "recipient": "1", "content": content, "email": "tito@example.com",
                       "push_secrets": (SECRET,), **changes})


class Listener:
    """A bare TCP listener on loopback that counts the connections that reach it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    running = Listener()
    yield running
    running.close()


# --- the address policy ---------------------------------------------------------------------------

@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


@pytest.mark.parametrize("template", INWARD)
def test_inward_targets_are_refused_at_send_time_without_a_connection(settings, listener, template):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    url = template.format(port=listener.port)

    with pytest.raises(PermanentChannelError) as refused:
        WebhookChannel().send(_outgoing(push_endpoint=url))

    assert "push endpoint refused" in str(refused.value) or "invalid push endpoint" in str(refused.value)
    assert listener.accepted == 0


def test_the_refusal_reads_the_same_for_an_open_and_a_closed_port(settings, listener):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, never listening: connecting would be refused
    errors = []
    for port in (listener.port, closed_port):
        with pytest.raises(PermanentChannelError) as refused:
            WebhookChannel().send(_outgoing(push_endpoint=f"http://127.0.0.1:{port}/hook"))
        errors.append(str(refused.value))
    closed.close()

    assert errors[0] == errors[1] == "push endpoint refused: 127.0.0.1 is a loopback address"
    assert listener.accepted == 0


def test_a_name_resolving_inward_is_refused(settings, monkeypatch, listener):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    real = socket.getaddrinfo
    answers = {"hooks.example.com": "10.1.2.3", "sneaky.example.com": "127.0.0.1"}

    def resolver(host, port, *args, **kwargs):
        if host in answers:
            return real(answers[host], port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)

    for host in answers:
        with pytest.raises(PermanentChannelError, match=f"{host} resolves to {answers[host]}"):
            WebhookChannel().send(_outgoing(push_endpoint=f"http://{host}:{listener.port}/"))
    assert listener.accepted == 0


def test_a_name_with_one_inward_address_among_public_ones_is_refused(monkeypatch):
    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with pytest.raises(TargetRefused, match="127.0.0.1, a loopback address"):
        target_resolve("http://mixed.example.com/", allow_private=False, resolver=resolver)


def test_the_connection_goes_to_the_address_that_was_checked(settings, monkeypatch, listener):
    """A rebinding name answers a public address to the check and loopback afterwards: the worker
    looks it up once and connects to the address it checked, never to a second answer."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    lookups, connected = [], []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        if host == "rebind.example.com":
            lookups.append(host)
            address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        connected.append(address)
        raise ConnectionRefusedError("not leaving this machine in a test")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)

    with pytest.raises(TransientChannelError):
        WebhookChannel().send(_outgoing(push_endpoint=f"http://rebind.example.com:{listener.port}/"))

    assert lookups == ["rebind.example.com"]
    assert connected == [("93.184.216.34", listener.port)]
    assert listener.accepted == 0


def test_allowing_private_networks_reaches_a_local_receiver_by_name(settings, monkeypatch, webhook_receiver):
    """With the allow setting on, a name is still resolved once, and the request carries it in Host."""
    real = socket.getaddrinfo
    lookups = []

    def resolver(host, port, *args, **kwargs):
        if host == "hooks.test":
            lookups.append(host)
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = webhook_receiver.url.rsplit(":", 1)[1]

    WebhookChannel().send(_outgoing(push_endpoint=f"http://hooks.test:{port}/ok?a=1"))

    [(headers, _)] = webhook_receiver.received_for("/ok?a=1")
    assert headers["Host"] == f"hooks.test:{port}"
    assert lookups == ["hooks.test"]


# --- signatures -----------------------------------------------------------------------------------

def test_webhooks_are_signed_per_standard_webhooks(webhook_receiver):
    WebhookChannel().send(_outgoing(push_endpoint=webhook_receiver.url + "/ok"))

    [(headers, body)] = webhook_receiver.received_for("/ok")
    assert headers["webhook-id"] == "n-1" == headers["Idempotency-Key"]
    assert Webhook(SECRET).verify(body, headers)["message"] == "Tito liked your post"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"Tito", b"Evil"), headers)


def test_during_a_rotation_both_secrets_sign(webhook_receiver):
    WebhookChannel().send(_outgoing(push_endpoint=webhook_receiver.url + "/ok", push_secrets=(SECRET, OLD_SECRET)))

    [(headers, body)] = webhook_receiver.received_for("/ok")
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(body, headers)
    Webhook(OLD_SECRET).verify(body, headers)


def test_the_gateway_is_signed_with_its_own_secret(settings, webhook_receiver):
    settings.PUSH_GATEWAY_URL = webhook_receiver.url + "/ok"
    settings.PUSH_GATEWAY_SECRET = OLD_SECRET

    WebhookChannel().send(_outgoing(push_secrets=(SECRET,)))

    [(headers, body)] = webhook_receiver.received_for("/ok")
    Webhook(OLD_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)


def test_an_endpoint_without_a_secret_is_not_sent_unsigned(webhook_receiver):
    with pytest.raises(PermanentChannelError, match="no signing secret"):
        WebhookChannel().send(_outgoing(push_endpoint=webhook_receiver.url + "/ok", push_secrets=()))
    assert webhook_receiver.requests == []


def test_the_gateway_is_trusted_as_configured(settings, webhook_receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    settings.PUSH_GATEWAY_URL = webhook_receiver.url + "/ok"  # 127.0.0.1: the operator's choice
    settings.PUSH_GATEWAY_SECRET = SECRET

    WebhookChannel().send(_outgoing())

    assert len(webhook_receiver.requests_for("/ok")) == 1


def test_redirects_are_not_followed(webhook_receiver, monkeypatch):
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", webhook_receiver.url + "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    with pytest.raises(PermanentChannelError, match="HTTP 307"):
        WebhookChannel().send(_outgoing(push_endpoint=f"http://127.0.0.1:{server.server_address[1]}/"))
    thread.join()
    server.server_close()
    assert webhook_receiver.requests == []


# --- ids in headers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("notification_id", ["2:用户1", "2:a%b", "2:x\r\nX-Evil: 1", "2:\x00\x7f", "3:é", "plain-uuid:42"])
def test_ids_go_into_headers_percent_encoded_and_come_back_whole(webhook_receiver, notification_id):
    WebhookChannel().send(_outgoing(notification_id=notification_id, push_endpoint=webhook_receiver.url + "/ok"))

    [(headers, body)] = webhook_receiver.received_for("/ok")
    assert headers["Idempotency-Key"] == header_value(notification_id) == headers["webhook-id"]
    assert headers["Idempotency-Key"].isascii() and headers["Idempotency-Key"].isprintable()
    assert unquote(headers["Idempotency-Key"]) == notification_id == orjson.loads(body)["id"]
    assert "X-Evil" not in headers
    Webhook(SECRET).verify(body, headers)


def test_ascii_ids_are_sent_unchanged():
    assert header_value("2:alice.b-c_d~e+f@g") == "2:alice.b-c_d~e+f@g"
    assert header_value("0b7c8f3e-0b2c-4a39-9d0e-8a3f1c2b4d5e") == "0b7c8f3e-0b2c-4a39-9d0e-8a3f1c2b4d5e"


# --- TLS --------------------------------------------------------------------------------------------

@pytest.fixture
def https_receiver():
    """An HTTPS receiver on loopback whose certificate is for hooks.test, from a throwaway CA."""
    import http.server

    ca = trustme.CA()
    certificate = ca.issue_cert("hooks.test")
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append((self.headers.get("Host"), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.ca, server.hits = ca, hits
    yield server
    server.shutdown()
    server.server_close()


def _resolve_to_loopback(monkeypatch, name):
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: real("127.0.0.1" if host == name else host, *a, **k))


def test_https_goes_to_the_checked_address_with_the_name_in_sni_and_the_certificate_check(
        settings, monkeypatch, https_receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    _resolve_to_loopback(monkeypatch, "hooks.test")
    channel = WebhookChannel()
    channel.http = urllib3.PoolManager(retries=False, ca_certs=None, ssl_context=_trusting(https_receiver.ca))
    port = https_receiver.server_address[1]

    channel.send(_outgoing(push_endpoint=f"https://hooks.test:{port}/"))

    [(host, body)] = https_receiver.hits
    assert host == f"hooks.test:{port}" and b"Tito" in body


def _trusting(ca):
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_a_certificate_for_another_name_is_a_permanent_failure(settings, monkeypatch, https_receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    _resolve_to_loopback(monkeypatch, "other.test")
    channel = WebhookChannel()
    channel.http = urllib3.PoolManager(retries=False, ssl_context=_trusting(https_receiver.ca))

    with pytest.raises(PermanentChannelError, match="TLS error"):
        channel.send(_outgoing(push_endpoint=f"https://other.test:{https_receiver.server_address[1]}/"))
    assert https_receiver.hits == []


def test_an_untrusted_certificate_is_a_permanent_failure(settings, https_receiver):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True

    with pytest.raises(PermanentChannelError, match="TLS error.*CERTIFICATE_VERIFY_FAILED"):
        WebhookChannel().send(_outgoing(push_endpoint=f"https://127.0.0.1:{https_receiver.server_address[1]}/"))


def test_https_to_a_plain_http_port_is_a_permanent_failure(webhook_receiver):
    with pytest.raises(PermanentChannelError, match="TLS error"):
        WebhookChannel().send(_outgoing(push_endpoint=webhook_receiver.url.replace("http:", "https:") + "/ok"))


def test_a_handshake_cut_off_is_transient(settings, listener):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True  # the listener accepts, then closes at once

    with pytest.raises(TransientChannelError):
        WebhookChannel().send(_outgoing(push_endpoint=f"https://127.0.0.1:{listener.port}/"))


# --- anything else the library raises ---------------------------------------------------------------

@pytest.mark.parametrize(("error", "expected"), [
    (urllib3.exceptions.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed")), PermanentChannelError),
    (urllib3.exceptions.SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")), TransientChannelError),
    (ssl.SSLError(1, "wrong version number"), PermanentChannelError),
    (urllib3.exceptions.ProtocolError("Connection aborted."), TransientChannelError),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), TransientChannelError),
    (urllib3.exceptions.LocationParseError("bad"), PermanentChannelError),
    (UnicodeEncodeError("latin-1", "用", 0, 1, "ordinal not in range"), UnexpectedChannelError),
    (urllib3.exceptions.HTTPError("something new"), UnexpectedChannelError),
    (RuntimeError("a bug"), UnexpectedChannelError),
])
def test_every_error_of_the_http_library_is_classified(monkeypatch, webhook_receiver, error, expected):
    channel = WebhookChannel()

    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr(channel, "_post", raising)
    with pytest.raises(expected):
        channel.send(_outgoing(push_endpoint=webhook_receiver.url + "/ok"))


def test_unexpected_errors_are_permanent_and_name_their_type():
    error = UnexpectedChannelError("unexpected KeyError: 'x'")
    assert isinstance(error, PermanentChannelError) and not error.transient


# --- email ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("title", ["Sale\nBcc: everyone@example.com", "Sale\r\nX-Evil: 1", "Sale\u2028today",
                                   "\x00Sale\x1b[31m", "Sale\ttoday"])
def test_a_title_never_breaks_the_email_subject(settings, title):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    EmailChannel().send(_outgoing(title=title, notification_id="2:用户1\n"))

    [message] = mail.outbox
    assert "\n" not in message.subject and "\r" not in message.subject and message.subject.startswith("Sale")
    assert message.to == ["tito@example.com"] and message.bcc == []
    assert message.extra_headers["X-Notification-Id"] == "2:%E7%94%A8%E6%88%B71%0A"
    message.message()  # renders without BadHeaderError


def test_a_title_of_only_control_characters_falls_back_to_the_kind(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    EmailChannel().send(_outgoing(title="\n\r\x00", message=""))

    assert mail.outbox[0].subject == "like"


def test_single_line():
    assert single_line("a\nb\r\nc\u2028d\u0085e\x00f  g") == "a b c d e f g"


class RaisingBackend:
    error: Exception

    def __init__(self, **kwargs):
        pass

    def send_messages(self, messages):
        raise self.error


@pytest.mark.parametrize(("error", "expected"), [
    (BadHeaderError("Header values can't contain newlines"), PermanentChannelError),
    (ValueError("Invalid address"), PermanentChannelError),
    (smtplib.SMTPNotSupportedError("SMTPUTF8 not supported"), PermanentChannelError),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), PermanentChannelError),
    (ssl.SSLEOFError(8, "EOF"), TransientChannelError),
    (KeyError("boom"), UnexpectedChannelError),
])
def test_every_error_of_the_email_backend_is_classified(settings, error, expected):
    settings.EMAIL_BACKEND = f"{__name__}.RaisingBackend"
    RaisingBackend.error = error

    with pytest.raises(expected):
        EmailChannel().send(_outgoing())


def test_channels_module_exports_the_classes_the_worker_catches():
    assert issubclass(channels.UnexpectedChannelError, channels.ChannelError)


# --- settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "named"), [
    ({"PUSH_GATEWAY_URL": "https://gateway.example.com/", "PUSH_GATEWAY_SECRET": None}, "PUSH_GATEWAY_SECRET"),
    ({"PUSH_GATEWAY_SECRET": "not-a-secret"}, "PUSH_GATEWAY_SECRET"),
    ({"PUSH_GATEWAY_SECRET": "whsec_c2hvcnQ="}, "PUSH_GATEWAY_SECRET"),  # 5 bytes
    ({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "maybe"}, "WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
    ({"WEBHOOK_SECRET_GRACE_SECONDS": "-1"}, "WEBHOOK_SECRET_GRACE_SECONDS"),
])
def test_webhook_settings_are_checked_at_start(changes, named):
    from core.testing import manage_check

    result = manage_check(SECRET_KEY="a-long-enough-secret-key", **changes)

    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and named in lines[0], result.stderr


def test_a_gateway_with_its_secret_passes_the_check():
    from core.testing import manage_check

    result = manage_check(SECRET_KEY="a-long-enough-secret-key", PUSH_GATEWAY_URL="https://gateway.example.com/",
                           PUSH_GATEWAY_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
