"""Every name the DSW derives from (workspace, user, server), from one injective encoding.

Why one encoding: names are identities. The engine's container name decides which container a
stale-container cleanup removes, the home volume decides whose files an instance mounts, the s3fs
folder decides whose bucket a container sees. Two inputs that map to one name are a breach, not a
cosmetic clash (issue 9, finding 6: ``j.doe`` and ``j-doe-d50cd4``; workspace ``ml`` + user
``research-ann`` and workspace ``ml-research`` + user ``ann``; user ``a--b`` and user ``a``'s
server ``b`` all shared names under the old "hash only when the text changed" rule).

The encoding, ``slug``: ``escapism`` (the escaping kubespawner and dockerspawner use) with the safe
set ``[a-z0-9-]`` and ``.`` as escape character, hex in lower case. ``t-alice`` stays ``t-alice``;
``j.doe`` becomes ``j.2edoe``; ``A`` becomes ``.41``. It is injective (escapism is), and its output
never holds ``_`` or ``/``, and holds ``.`` only before two hex digits.

Composite names join slugs with separators the slugs cannot hold, so they stay injective:
  * container ``dsw-<user>`` / ``dsw-<user>_<server>``: ``_`` never occurs in a slug;
  * home volume ``dsw-home-<workspace>.<user>``: workspace ids (catalogue ``ID_PATTERN``) hold no
    ``.``, so the first ``.`` is the separator;
  * s3fs folders and credential files: one path component per slug.

Length and character limits are checked, never fixed by truncation (truncating is what loses
injectivity): Kubernetes names that are not DNS names are refused with the reason (a PVC must be
a DNS subdomain). Label values, which cannot refuse a member (every instance carries them), use the
slug when it is a valid label value and otherwise ``h_`` + 40 hex digits of SHA-256 of the text:
``_`` never occurs in a slug, so the two forms cannot meet.
"""

from __future__ import annotations

import hashlib
import re
import string

import escapism

SAFE = frozenset(string.ascii_lowercase + string.digits + "-")
ESCAPE = "."
PREFIX = "dsw-"
HOME_PREFIX = "dsw-home-"
SERVER_SEPARATOR = "_"
#: the default server's folder and label: ``_`` is never a slug
DEFAULT_SERVER = "_"
DEFAULT_SERVER_LABEL = "h_default"
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_MAX = 253


def slug(text: str) -> str:
    """The injective encoding of one name (user, server, workspace...)."""
    if not isinstance(text, str) or not text:
        raise ValueError("a name to encode must be a non-empty string")
    escaped = escapism.escape(text, safe=SAFE, escape_char=ESCAPE)
    # escapism writes hex in upper case; lower-casing only touches the two hex digits after
    # each '.', since every other character left unescaped is already lower case
    return re.sub(r"\.[0-9A-F]{2}", lambda m: m.group(0).lower(), escaped)


def server_slug(server: str) -> str:
    return slug(server) if server else DEFAULT_SERVER


def container_name(user: str, server: str) -> str:
    """The engine's container name of an instance (any length: the engine imposes none)."""
    return container_name_of(slug(user), server_slug(server))


def container_name_of(user_slug: str, server_slug_: str) -> str:
    """The container name from already-encoded parts (the s3fs sweep reads them from folders)."""
    if server_slug_ == DEFAULT_SERVER:
        return f"{PREFIX}{user_slug}"
    return f"{PREFIX}{user_slug}{SERVER_SEPARATOR}{server_slug_}"


def home_volume_name(workspace: str, user: str) -> str:
    """A member's home in a workspace: an engine volume here, a PVC on Kubernetes."""
    if not workspace or "." in workspace or "/" in workspace:
        raise ValueError(f"workspace id {workspace!r} may not hold '.' or '/'")
    return f"{HOME_PREFIX}{workspace}.{slug(user)}"


def label_value(text: str) -> str:
    """A label value (Docker and Kubernetes) that names ``text`` and no other text."""
    encoded = slug(text)
    if LABEL_VALUE.fullmatch(encoded) and len(encoded) <= 63:
        return encoded
    return "h_" + hashlib.sha256(text.encode()).hexdigest()[:40]


def server_label(server: str) -> str:
    return label_value(server) if server else DEFAULT_SERVER_LABEL


def dns_subdomain_problem(name: str) -> str | None:
    """Why ``name`` cannot name a Kubernetes object such as a PVC (None when it can)."""
    if len(name) > DNS_SUBDOMAIN_MAX:
        return f"is longer than {DNS_SUBDOMAIN_MAX} characters"
    if not all(DNS_LABEL.fullmatch(part) for part in name.split(".")):
        return ("is not a DNS name (each '.'-separated part: lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters)")
    return None


def image_repository(prefix: str, workspace: str, user: str, name: str) -> str:
    """Repository of an image a member saved: ``<prefix>/<workspace>/<user slug>/<name slug>``.
    One path component per part, so distinct (workspace, user, name) never share a repository;
    refused (ValueError) when a part is not a valid repository path component."""
    parts = [workspace, slug(user), slug(name)]
    component = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
    bad = [p for p in parts if not component.fullmatch(p)]
    if bad:
        raise ValueError(f"{bad[0]!r} cannot be part of an image repository (it must start and end "
                         "with a letter or digit)")
    return "/".join([prefix.rstrip("/"), *parts])
