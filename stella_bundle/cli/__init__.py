"""The `stella` command: a thin layer over the library; errors become exit codes here only."""

from __future__ import annotations

import errno
import gc
import sys
import traceback

import typer
import typer.main

try:  # typer >= 0.20 vendors click; its commands raise the vendored exception classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from ..errors import StellaError
from . import output, params
from .app import app

params.install()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    output.state.verbose = "--verbose" in args
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="stella", standalone_mode=False)
    except StellaError as exc:
        if output.state.verbose:
            traceback.print_exc()
        output.error_line(f"error: {exc.describe()}")
        return exc.exit_code
    except typer.Abort:
        output.error_line("aborted")
        return 130
    except click_exceptions.BadParameter as exc:
        # A value the option's type refused (a path that is not readable...): one line
        # naming the option, like every other input error, not a usage box.
        # "Value error, " is how the option parser prefixes a refused choice: noise.
        output.error_line(f"error: {exc.format_message().replace('Value error, ', '')}")
        return 2
    except click_exceptions.ClickException as exc:
        exc.show()
        return 2
    except KeyboardInterrupt:
        output.error_line("interrupted")
        return 130
    except Exception as exc:  # anything unexpected is our bug: exit 3, traceback on request
        if output.state.verbose:
            traceback.print_exc()
        limit = _input_limit(exc)
        if limit is not None:
            output.error_line(f"error: {limit}")
            return 2
        output.error_line(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)"
        )
        return 3
    return int(result) if isinstance(result, int) else 0


def _input_limit(exc: BaseException) -> str | None:
    """The net under the parsers (each catches these where it can name the file): the two
    interpreter limits only hostile input reaches, and a path that cannot be used, are bad
    input, exit 2, not our bug."""
    if isinstance(exc, RecursionError):
        return f"input nested too deeply to process ({exc})"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return f"input holds a number too long to convert ({str(exc).splitlines()[0]})"
    if isinstance(exc, OSError) and exc.filename and exc.errno in _PATH_ERRNOS:
        # A path the user gave that cannot be used (permissions, a directory for a file...).
        return f"{exc.filename}: {exc.strerror}"
    return None


_PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EROFS,
    }
)


def entrypoint() -> None:
    code = main()
    # Nothing the command made is needed now: the interpreter's last collection at exit would
    # only walk every object of every module to find nothing to free (~0.05 s of CPU after a
    # `bundle verify`, ~560 modules). Frozen objects are left out of it; files were closed and
    # streams are flushed at exit as before.
    gc.freeze()
    sys.exit(code)
