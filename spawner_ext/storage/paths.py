"""Mount-path rules, shared by the catalogue (default paths) and the spawn options (chosen paths).

Pure functions: a path is refused with a reason a member can act on.
"""

from __future__ import annotations

import re

# The instance home (spec.HOME; not imported: the catalogue schema imports this module first).
HOME = "/home/jovyan"

# Folders of the image a mount must neither cover, sit in, nor hide (mounting above them hides them).
SYSTEM_FOLDERS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run",
    "/sbin", "/sys", "/tmp", "/usr", "/var", "/opt/dsw", "/opt/code-server", "/opt/node",
)
PATH_CHARS = re.compile(r"^[A-Za-z0-9._/@+-]+$")
MAX_PATH = 255


def normal_form(path: str) -> str:
    """The one spelling of an absolute path the kernel resolves the same way: no empty or '.'
    components, no trailing '/'. Not ``posixpath.normpath``: POSIX lets it keep two leading
    slashes (``//etc``), which Linux resolves as ``/etc`` (issue 9, finding 4)."""
    return "/" + "/".join(p for p in path.split("/") if p not in ("", "."))


def _within(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or inside it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """Same folder, or one inside the other."""
    return _within(a, b) or _within(b, a)


def mount_path_problem(path: object, home: str = HOME) -> str | None:
    """Why ``path`` cannot be a mount path, or None when it can (overlap with other mounts is
    checked by the caller, which knows them)."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if len(path) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters"
    if not path.startswith("/"):
        return "must be absolute (start with '/')"
    if ".." in path.split("/"):
        return "must not contain '..'"
    if not PATH_CHARS.fullmatch(path):
        return "may hold only letters, digits, '.', '_', '-', '@', '+' and '/'"
    if path == "/":
        return "must not be '/'"
    if normal_form(path) != path:
        return f"must be normalised (write {normal_form(path)!r})"
    for folder in SYSTEM_FOLDERS:
        if _within(path, folder):
            return f"is inside the system folder {folder}"
        if _within(folder, path):
            return f"would hide the system folder {folder}"
    if overlaps(path, home):
        return f"overlaps the home folder {home}"
    return None


def host_path_problem(path: object) -> str | None:
    """A host folder named in the catalogue: absolute and normalised."""
    if not isinstance(path, str) or not path.startswith("/"):
        return "must be an absolute path"
    if ".." in path.split("/") or normal_form(path) != path or path == "/":
        return "must be normalised, without '..', and not '/'"
    return None


SUB_PATH_FIELDS = ("workspace", "user", "server")


def sub_path_template_problem(template: str) -> str | None:
    if not template:
        return None
    if template.startswith("/") or ".." in template.split("/"):
        return "must be relative and must not contain '..'"
    names = re.findall(r"{([^{}]*)}", template)
    unknown = [n for n in names if n not in SUB_PATH_FIELDS]
    if unknown:
        return f"unknown placeholder {{{unknown[0]}}} (known: {', '.join('{' + f + '}' for f in SUB_PATH_FIELDS)})"
    stripped = re.sub(r"{[^{}]*}", "x", template)
    if "{" in stripped or "}" in stripped or not re.fullmatch(r"^[A-Za-z0-9._/-]+$", stripped):
        return "may hold only letters, digits, '.', '_', '-', '/' and placeholders"
    return None


def render_sub_path(template: str, *, workspace: str, user: str, server: str) -> str:
    """Fill the template; values are catalogue ids and safe names, so the result stays inside."""
    if not template:
        return ""
    out = template.format(workspace=workspace, user=user, server=server)
    parts = [p for p in out.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):  # cannot happen with safe names; refuse rather than escape
        raise ValueError(f"sub path {out!r} leaves its export")
    return "/".join(parts)
