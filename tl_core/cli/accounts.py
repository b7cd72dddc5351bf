"""Workshop-server commands of `python -m tl_core` (registered by `tl_core.cli.main.build_parser`):

    users add NAME [--role trainer|student] [--display-name X] [--password-stdin]
    users list [--json]        users passwd NAME [--password-stdin]        users remove NAME
    codes new N --by TRAINER [--days D] [--json]        codes list [--json]        codes revoke
    serve                      start the app with the server's settings (personal or workshop)

Every command reads the users file from the server's settings (`TRANSFERLAB_USERS_FILE`,
`users_file` in transferlab.toml, else `<workspace>/users.json`); `--users-file` overrides it.
Passwords are read with getpass (asked twice), or one line from stdin with `--password-stdin`;
never from the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tl_core.server.accounts import AuthError, UserDirectory
from tl_core.server.settings import load_server_settings, streamlit_flags

APP_FILE = Path(__file__).resolve().parents[2] / "app.py"
SECONDS_PER_DAY = 86400


def _directory(args: argparse.Namespace) -> UserDirectory:
    return UserDirectory(Path(args.users_file) if args.users_file else load_server_settings().users_file)


def _new_password(args: argparse.Namespace, name: str) -> str:
    """The new password: one stdin line with --password-stdin, else typed twice without echo."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"New password for {name}: ")
    if getpass.getpass("Again: ") != first:
        raise AuthError("The two passwords differ: run the command again and type the same password twice.")
    return first


def _when(timestamp: float | None, empty: str = "-") -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else empty


def cmd_users_add(args: argparse.Namespace) -> int:
    directory = _directory(args)
    user = directory.add_user(args.name, _new_password(args, args.name), role=args.role, display_name=args.display_name)
    print(f"added {user.role} {user.name} ({user.display_name}) to {directory.path}")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    accounts = _directory(args).list_users()
    if args.json:
        print(json.dumps([{"name": u.name, "role": u.role, "display_name": u.display_name} for u in accounts]))
        return 0
    if not accounts:
        print("No accounts yet: `python -m tl_core users add NAME --role trainer` creates the first one.")
        return 0
    print(f"{'user':<34} {'role':<8} name")
    for account in accounts:
        print(f"{account.name:<34} {account.role:<8} {account.display_name}")
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if directory.get_user(args.name) is None:
        raise AuthError(
            f"No user {args.name!r} in {directory.path}: `python -m tl_core users list` shows the accounts."
        )
    directory.set_password(args.name, _new_password(args, args.name))
    print(f"password of {args.name} changed")
    return 0


def cmd_users_remove(args: argparse.Namespace) -> int:
    _directory(args).remove_user(args.name)
    print(f"removed {args.name} (their workspace folder is kept; the Trainer page can clean it up)")
    return 0


def cmd_codes_new(args: argparse.Namespace) -> int:
    directory = _directory(args)
    trainer = directory.get_user(args.by)
    if trainer is None or not trainer.is_trainer:
        raise AuthError(
            f"--by {args.by}: codes are made by a trainer account; `python -m tl_core users list` shows the trainers."
        )
    if args.days < 0:
        raise AuthError(f"--days {args.days}: give the number of days the codes stay valid (0 for no expiry).")
    codes = directory.create_class_codes(
        args.count, trainer.name, lifetime_s=args.days * SECONDS_PER_DAY if args.days else None
    )
    if args.json:
        print(json.dumps(codes))
        return 0
    expiry = f"valid for {args.days:g} day(s)" if args.days else "no expiry"
    print(f"{len(codes)} class code(s), {expiry}; they are shown only now:", file=sys.stderr)
    for code in codes:
        print(code)
    return 0


def cmd_codes_list(args: argparse.Namespace) -> int:
    codes = _directory(args).list_class_codes()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "digest_prefix": c.digest_prefix,
                        "created_at": c.created_at,
                        "created_by": c.created_by,
                        "expires_at": c.expires_at,
                        "used_by": c.used_by,
                        "used_at": c.used_at,
                        "usable": c.is_usable,
                    }
                    for c in codes
                ]
            )
        )
        return 0
    if not codes:
        print("No class codes: `python -m tl_core codes new 20 --by TRAINER` makes some.")
        return 0
    print(f"{'code':<10} {'made by':<20} {'made':<17} {'expires':<17} used by")
    for c in codes:
        print(
            f"{c.digest_prefix + '…':<10} {c.created_by:<20} {_when(c.created_at):<17} {_when(c.expires_at, 'never'):<17} {c.used_by or '-'}"
        )
    return 0


def cmd_codes_revoke(args: argparse.Namespace) -> int:
    print(f"revoked {_directory(args).revoke_unused_codes()} unused class code(s)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_server_settings()
    if settings.sign_in_required and not any(u.is_trainer for u in UserDirectory(settings.users_file).list_users()):
        raise AuthError(
            f"Workshop mode needs a trainer account in {settings.users_file}: "
            "`python -m tl_core users add NAME --role trainer` creates one."
        )
    if settings.job_backend == "ray" and settings.ray_address not in (None, "auto"):
        from tl_core.jobs.ray_backend import check_reachable  # a socket test: Ray itself is not imported here

        check_reachable(settings.ray_address)  # one clear message now, not a page that hangs later
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), *streamlit_flags(settings)]
    where = f"http://{settings.host}:{settings.port}"
    reach = "sign-in required" if settings.sign_in_required else "this machine only"
    print(f"TransferLab ({settings.mode} mode, {reach}) on {where}; workspace {settings.workspace}", file=sys.stderr)
    sys.stdout.flush()
    os.execv(sys.executable, command)  # replaces this process: Streamlit then owns signals and the exit status
    return 0  # only reached when execv is replaced (tests)


def add_account_commands(sub: Any) -> None:
    """Register `users`, `codes` and `serve` on the CLI's sub-parsers."""
    accounts = argparse.ArgumentParser(add_help=False)
    accounts.add_argument(
        "--users-file", default=None, help="accounts file (default: from the server settings, <workspace>/users.json)"
    )
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON (the last stdout line)")
    password = argparse.ArgumentParser(add_help=False)
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from one line of stdin instead of asking"
    )

    users = sub.add_parser("users", help="workshop accounts").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    add = users.add_parser("add", parents=[accounts, password], help="create an account")
    add.add_argument("name")
    add.add_argument("--role", choices=("student", "trainer"), default="student")
    add.add_argument("--display-name", default=None)
    add.set_defaults(handler=cmd_users_add)
    users.add_parser("list", parents=[accounts, listing], help="list accounts").set_defaults(handler=cmd_users_list)
    passwd = users.add_parser("passwd", parents=[accounts, password], help="set a new password")
    passwd.add_argument("name")
    passwd.set_defaults(handler=cmd_users_passwd)
    remove = users.add_parser("remove", parents=[accounts], help="delete an account (keeps its files)")
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_users_remove)

    codes = sub.add_parser("codes", help="one-time class codes").add_subparsers(
        dest="codes_command", required=True, metavar="ACTION"
    )
    new = codes.add_parser("new", parents=[accounts, listing], help="make N codes (printed once)")
    new.add_argument("count", type=int, metavar="N")
    new.add_argument("--by", required=True, metavar="TRAINER", help="the trainer account the codes are made by")
    new.add_argument("--days", type=float, default=7, help="days until unused codes expire (0: never; default 7)")
    new.set_defaults(handler=cmd_codes_new)
    codes.add_parser("list", parents=[accounts, listing], help="list codes (fingerprints only)").set_defaults(
        handler=cmd_codes_list
    )
    codes.add_parser("revoke", parents=[accounts], help="delete every unused code").set_defaults(
        handler=cmd_codes_revoke
    )

    sub.add_parser(
        "serve", help="start the app (TRANSFERLAB_MODE=workshop or transferlab.toml for a shared server)"
    ).set_defaults(handler=cmd_serve)
