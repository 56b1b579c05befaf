"""Fetch a recording over HTTP(S) from an allowed recording host.

Only hosts in ``fetch.http_hosts`` are contacted ('host' allows the scheme's default port, 'host:port' that
port), every redirect is checked against the same list, no proxy from the environment is used, and size and
time limits hold while the body streams to disk. An allowed *name* must resolve to public addresses only: a
name that resolves to a loopback, link-local (cloud metadata at 169.254.169.254), private, shared or reserved
address is refused unless the allowlist names that address itself (``10.0.0.5:8080``), so that a DNS record
cannot turn an allowed host into a way into the service's own network. The name is resolved once per request
and the connection goes to the address that was checked (the URL's name stays in the Host header and in TLS's
server name and certificate check), so a second lookup answering differently (DNS rebinding) is never used.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from callqa.config import FetchSettings
from callqa.errors import FetchError, InputError, LimitError
from callqa.sources import copy_limited, safe_name


def allowed(url: httpx.URL, hosts: list[str]) -> bool:
    if url.scheme not in ("http", "https") or not url.host or url.userinfo:
        return False
    default = 443 if url.scheme == "https" else 80
    port = url.port or default
    host = url.host.lower()
    # IPv6 literals are compared in brackets, as they are written in the allowlist
    written = f"[{host}]" if ":" in host else host
    return any(entry.lower() in (f"{written}:{port}",) or (entry.lower() == written and port == default)
               for entry in hosts)  # fmt: skip


def _listed_addresses(hosts: list[str]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = set()
    for entry in hosts:
        host = entry.strip()
        if host.startswith("["):
            host = host[1 : host.find("]")]
        elif host.count(":") == 1:
            host = host.split(":")[0]
        try:
            out.add(ipaddress.ip_address(host))
        except ValueError:
            continue
    return out


def check_resolved(url: httpx.URL, hosts: list[str],
                   resolve: Callable[[str, int], list[str]] | None = None) -> list[str]:  # fmt: skip
    """The addresses of the URL's host; refuses a host whose addresses are not public, unless each such address
    is listed literally."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = (resolve or _resolve)(host, port)
    except OSError as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    listed = _listed_addresses(hosts)
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%")[0])
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if not (mapped or ip).is_global and (mapped or ip) not in listed and ip not in listed:
            raise FetchError(f"{host} resolves to {ip}, an internal address (loopback, link-local, private or "
                             f"metadata): only an address listed in fetch.http_hosts may be internal")  # fmt: skip
    if not addresses:
        raise FetchError(f"cannot resolve {host}: no address")
    return addresses


def pinned(url: httpx.URL, hosts: list[str]) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
    """The request for ``url`` aimed at the address that was checked: the URL with that address, the Host
    header and (HTTPS) the TLS server name of the original name, which the certificate is verified against."""
    address = check_resolved(url, hosts)[0].split("%")[0]
    if url.host == address or url.host.strip("[]") == address:
        return url, {}, {}
    extensions: dict[str, Any] = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return url.copy_with(host=address), {"Host": url.netloc.decode("ascii")}, extensions


def _resolve(host: str, port: int) -> list[str]:
    """The host's addresses, in the resolver's order (IPv4 first when both answer)."""
    found = [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda a: ":" in a)


def fetch_http(url: str, fetch: FetchSettings, dest_dir: Path) -> Path:
    """Stream ``url`` into ``dest_dir``; returns the file. Raises FetchError, LimitError or InputError."""
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"not a valid URL: {url!r}") from exc
    deadline = time.monotonic() + fetch.timeout_s
    timeout = httpx.Timeout(min(fetch.timeout_s, 15.0))
    try:
        with httpx.Client(follow_redirects=False, timeout=timeout, trust_env=False) as client:
            for _ in range(fetch.max_redirects + 1):
                if not allowed(current, fetch.http_hosts):
                    raise FetchError(f"{current.host or url!r} is not an allowed recording host")
                target, headers, extensions = pinned(current, fetch.http_hosts)
                with client.stream("GET", target, headers=headers, extensions=extensions) as resp:
                    if resp.is_redirect:
                        current = current.join(resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise FetchError(f"{current} answered HTTP {resp.status_code}")
                    return _save(resp, current, fetch, dest_dir, deadline)
    except httpx.TimeoutException as exc:
        raise FetchError(f"fetching {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch {url}: {exc}") from exc
    raise FetchError(f"{url}: more than {fetch.max_redirects} redirects")


def _save(resp: httpx.Response, url: httpx.URL, fetch: FetchSettings, dest_dir: Path, deadline: float) -> Path:
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > fetch.max_bytes:
        raise LimitError(f"{url} is {int(declared)} bytes, more than the limit of {fetch.max_bytes}")
    path = dest_dir / safe_name(url.path.rsplit("/", 1)[-1])  # its suffix helps the decoder
    with open(path, "wb") as f:
        # iter_bytes() yields as data arrives, so the deadline is checked often
        total = copy_limited(resp.iter_bytes(), f, str(url), fetch.max_bytes, deadline, fetch.timeout_s)
    if total == 0:
        raise FetchError(f"{url} returned an empty body")
    return path


def probe_http(url: str, fetch: FetchSettings) -> str | None:
    """What ``url`` holds now, without its body (a HEAD request under the same allowlist): a fingerprint made of
    its final address, length, Last-Modified and ETag, or None when the server says it does not exist (404, 410).
    Raises FetchError when the server cannot tell (refused host, other statuses, no connection)."""
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InputError(f"not a valid URL: {url!r}") from exc
    try:
        with httpx.Client(follow_redirects=False, timeout=min(fetch.timeout_s, 15.0), trust_env=False) as client:
            for _ in range(fetch.max_redirects + 1):
                if not allowed(current, fetch.http_hosts):
                    raise FetchError(f"{current.host or url!r} is not an allowed recording host")
                target, headers, extensions = pinned(current, fetch.http_hosts)
                resp = client.request("HEAD", target, headers=headers, extensions=extensions)
                if resp.is_redirect:
                    current = current.join(resp.headers.get("location", ""))
                    continue
                if resp.status_code in (404, 410):
                    return None
                if resp.status_code != 200:
                    raise FetchError(f"{current} answered HTTP {resp.status_code}")
                h = resp.headers
                return f"{current} {h.get('content-length', '')} {h.get('last-modified', '')} {h.get('etag', '')}"
    except httpx.TimeoutException as exc:
        raise FetchError(f"asking {url} timed out") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot reach {url}: {exc}") from exc
    raise FetchError(f"{url}: more than {fetch.max_redirects} redirects")
