"""The SSRF guard on its own: schemes, internal addresses, the allow-list.

Address literals only (and `localhost`, which resolves from /etc/hosts): no DNS needed.
"""

from __future__ import annotations

import httpx
import pytest

from ingestion_assets.fetching.errors import FetchError, PermanentFetchError
from ingestion_assets.fetching.url_guard import UrlGuard


@pytest.mark.parametrize(
    ("url", "scheme_in_message"),
    [
        ("file:///etc/passwd", "file"),
        ("ftp://files.example.com/prices.csv", "ftp"),
        ("gopher://93.184.215.14:70/_GET", "gopher"),
        ("javascript:alert(document.cookie)", "javascript"),
        ("data:text/csv,a,b", "data"),
        ("FILE:///etc/shadow", "file"),
    ],
)
def test_non_http_schemes_are_refused_naming_the_scheme(url, scheme_in_message):
    with pytest.raises(PermanentFetchError) as caught:
        UrlGuard().check(url)
    message = str(caught.value)
    assert f"'{scheme_in_message}://'" in message
    assert "only http and https" in message
    assert caught.value.retryable is False


def test_a_url_without_scheme_is_refused_saying_so():
    with pytest.raises(PermanentFetchError, match="no scheme"):
        UrlGuard().check("example.com/prices.csv")


def test_a_url_without_host_is_refused():
    with pytest.raises(PermanentFetchError, match="no host"):
        UrlGuard().check("http:///prices.csv")


@pytest.mark.parametrize("url", ["http://example.com:99999/x.csv", "http://[::1/x.csv"])
def test_a_url_urlsplit_cannot_read_is_refused_not_a_crash(url):
    """A redirect's Location reaches the guard unchecked by the sheet's validation."""
    with pytest.raises(PermanentFetchError, match="invalid URL"):
        UrlGuard().check(url)


INTERNAL = [
    ("http://127.0.0.1/prices.csv", "127.0.0.1"),
    ("http://127.8.9.10:8080/x", "127.8.9.10"),
    ("http://10.0.0.5/x", "10.0.0.5"),
    ("http://10.255.255.254/x", "10.255.255.254"),
    ("http://172.16.0.1/x", "172.16.0.1"),
    ("http://172.31.255.1/x", "172.31.255.1"),
    ("http://192.168.1.1/x", "192.168.1.1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("https://169.254.169.254/computeMetadata/v1/", "169.254.169.254"),
    ("http://[::1]/x", "::1"),
    ("http://[::1]:8000/x", "::1"),
    ("http://[fe80::1]/x", "fe80::1"),
    ("http://[fd00::1]/x", "fd00::1"),
    ("http://[::ffff:127.0.0.1]/x", "::ffff:"),
    ("http://[::ffff:169.254.169.254]/x", "::ffff:"),
    ("http://0.0.0.0/x", "0.0.0.0"),
    ("http://100.64.0.1/x", "100.64.0.1"),  # carrier-grade NAT: not global
    ("http://224.0.0.1/x", "224.0.0.1"),  # multicast
    ("http://localhost/x", "127.0.0.1"),
    ("http://2130706433/x", "127.0.0.1"),  # 127.0.0.1 as one decimal number
    ("http://127.1/x", "127.0.0.1"),  # short form
    ("http://93.184.215.14@127.0.0.1/x", "127.0.0.1"),  # the host is after the '@'
]


@pytest.mark.parametrize(("url", "address"), INTERNAL)
def test_internal_addresses_are_refused_by_default(url, address):
    with pytest.raises(PermanentFetchError) as caught:
        UrlGuard().check(url)
    message = str(caught.value)
    assert "refused" in message
    assert address in message
    assert "SSRF" in message
    assert caught.value.retryable is False


def test_refusal_names_the_setting_that_would_allow_it():
    with pytest.raises(PermanentFetchError, match="SSRF_ALLOWED_HOSTS"):
        UrlGuard().check("http://10.1.2.3/prices.csv")


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/prices.csv",
        "https://93.184.215.14:8443/prices.xlsx",
        "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/prices.csv",
        "http://8.8.8.8/x",
    ],
)
def test_public_address_literals_are_allowed(url):
    UrlGuard().check(url)  # no exception


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (("localhost",), "http://localhost:8000/prices.csv"),
        (("LocalHost.",), "http://localhost/prices.csv"),
        (("127.0.0.1",), "http://127.0.0.1:9999/prices.csv"),
        (("127.0.0.0/8",), "http://127.3.4.5/prices.csv"),
        (("10.0.0.0/8",), "http://10.20.30.40/prices.csv"),
        (("192.168.0.0/16",), "http://192.168.7.7/prices.csv"),
        (("172.16.0.0/12",), "http://172.20.0.3/prices.csv"),
        (("::1",), "http://[::1]:8000/prices.csv"),
        (("fe80::/10",), "http://[fe80::abcd]/prices.csv"),
        (("10.0.0.0/8", " ", "192.168.1.10"), "http://192.168.1.10/prices.csv"),
    ],
)
def test_allow_list_by_name_address_or_cidr(allow, url):
    with pytest.raises(PermanentFetchError):
        UrlGuard().check(url)  # refused without the allow-list...
    UrlGuard(allow).check(url)  # ...allowed with it


@pytest.mark.parametrize(
    ("allow", "url"),
    [
        (("127.0.0.1",), "http://127.0.0.2/x"),
        (("10.0.0.0/24",), "http://10.0.1.1/x"),
        (("192.168.1.10",), "http://169.254.169.254/latest/meta-data/"),
        (("intranet.local",), "http://localhost/x"),
        (("::1",), "http://127.0.0.1/x"),  # an IPv6 entry does not allow an IPv4 address
    ],
)
def test_allow_list_is_not_wider_than_written(allow, url):
    with pytest.raises(PermanentFetchError, match="refused"):
        UrlGuard(allow).check(url)


def test_from_csv_reads_the_setting():
    guard = UrlGuard.from_csv("localhost, 10.0.0.0/8 ,,192.168.1.10")
    guard.check("http://localhost/x")
    guard.check("http://10.9.8.7/x")
    guard.check("http://192.168.1.10/x")
    with pytest.raises(PermanentFetchError):
        guard.check("http://192.168.1.11/x")
    with pytest.raises(PermanentFetchError):
        UrlGuard.from_csv(None).check("http://localhost/x")
    with pytest.raises(PermanentFetchError):
        UrlGuard.from_csv("").check("http://10.0.0.1/x")


def test_the_allow_list_does_not_open_other_schemes():
    with pytest.raises(PermanentFetchError, match="'file://'"):
        UrlGuard(("localhost", "127.0.0.0/8")).check("file://localhost/etc/passwd")


def test_an_unresolvable_host_is_a_transient_error():
    with pytest.raises(FetchError) as caught:
        UrlGuard().check("http://no-such-host.invalid/prices.csv")
    assert "cannot resolve host 'no-such-host.invalid'" in str(caught.value)
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1\\@93.184.215.14/x",
        "http://93.184.215.14@127.0.0.1/x",
        "http://127.0.0.1#@93.184.215.14/x",
        "http://127.0.0.1?@93.184.215.14/x",
        "http://127.0.0.1%2f@93.184.215.14/x",
        "http://[::1]@93.184.215.14/x",
    ],
)
def test_the_guard_checks_the_host_httpx_will_connect_to(url):
    """Parser confusion: whatever the guard lets through, httpx must connect to a public host."""
    try:
        UrlGuard().check(url)
    except PermanentFetchError:
        return  # refused: safe whatever httpx thinks
    assert httpx.URL(url).host == "93.184.215.14"
