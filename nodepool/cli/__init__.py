"""The `nodepool` command: talks to ZooKeeper (and reads the config file; only
alien-image-list also lists a cloud's images)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from nodepool import __version__
from nodepool.cli import admin as admin_cmds
from nodepool.cli import alien as alien_cmd
from nodepool.cli import explain as explain_cmd
from nodepool.cli import images as image_cmds
from nodepool.cli import nodes as node_cmds
from nodepool.cli import requests as request_cmds
from nodepool.cli import tables as table_cmds
from nodepool.errors import LockFailed, NodepoolError, NotFound, ZooKeeperUnavailable
from nodepool.zk.client import ZooKeeperClient

DEFAULT_CONFIG = "/etc/nodepool/nodepool.yaml"

# Exit codes, documented in doc/cli.md.
EXIT_OK = 0
EXIT_FAILED = 1        # the operation failed: not found, locked, invalid config, request failed
EXIT_USAGE = 2         # argparse's own code for bad arguments
EXIT_ZOOKEEPER = 3     # ZooKeeper could not be reached
EXIT_PIPE = 141        # the reader of our output went away (`| head`): 128 + SIGPIPE, as GNU tools


def node_id(text: str) -> str:
    """A node id as ZooKeeper names nodes: digits (`nodepool list` shows them)."""
    if not text.isdigit() or len(text) > 20:
        raise argparse.ArgumentTypeError(f"{text!r} is not a node id (node ids are digits, "
                                         f"as `nodepool list` shows them)")
    return text


def field_list(text: str) -> list[str]:
    """`--fields id,state`: column keys (checked against the table by the command)."""
    fields = [f.strip() for f in text.split(",") if f.strip()]
    if not fields:
        raise argparse.ArgumentTypeError("no field named")
    return fields


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodepool", description=__doc__)
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"path to nodepool.yaml (default {DEFAULT_CONFIG})")
    parser.add_argument("-s", "--secure", metavar="FILE",
                        help="secure file with zookeeper-servers, zookeeper-tls and diskimage "
                             "env-vars (none by default)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="log debug output to stderr")
    parser.add_argument("-l", "--logconfig", metavar="FILE",
                        help="a Python logging config file (INI, or YAML as dictConfig)")
    parser.add_argument("--zk-timeout", type=float, default=None, metavar="SECONDS",
                        help="give up connecting to ZooKeeper after this long "
                             "(default: zookeeper-timeout from the config, at most 10)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list nodes")
    p.add_argument("--detail", action="store_true", help="more columns")
    p.add_argument("--fields", type=field_list, metavar="A,B",
                   help="only these columns, by key (id,label,state...; as /node-list?fields=)")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")

    p = sub.add_parser("request-list", help="list node requests")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")

    table_cmds.add_parsers(sub)
    explain_cmd.add_parser(sub)

    p = sub.add_parser("delete", help="mark a node for deletion (locks it, sets deleting)")
    p.add_argument("id", type=node_id, help="node id")
    p.add_argument("--now", action="store_true",
                   help="wait until the launcher has deleted the node (its record is gone)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="with --now: give up waiting after this long (default 300)")

    p = sub.add_parser("hold", help="hold a node (kept until deleted or max-hold-age)")
    p.add_argument("id", type=node_id, help="node id")
    p.add_argument("--reason", help="comment recorded on the node")

    p = sub.add_parser("info", help="show a provider's pools, pool workers, images and nodes")
    p.add_argument("provider", help="provider name")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")

    admin_cmds.add_parsers(sub)
    image_cmds.add_parsers(sub)
    alien_cmd.add_parser(sub)

    sub.add_parser("config-validate", help="validate the config file and exit")

    p = sub.add_parser("request", help="request nodes as a CI master would, and wait")
    p.add_argument("labels", nargs="+", metavar="LABEL")
    wait = p.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=True,
                      help="wait for the request to be fulfilled (the default)")
    wait.add_argument("--no-wait", dest="wait", action="store_false",
                      help="print the request id and return at once")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="cancel the request if not fulfilled by then (default 300)")
    p.add_argument("--requestor", default=request_cmds.default_requestor(),
                   help="requestor id written on the request")
    p.add_argument("--priority", type=int, default=200,
                   help="priority prefix, lower is served first (default 200)")
    p.add_argument("--provider", help="preferred provider")
    p.add_argument("--no-reuse", action="store_true", help="ask for freshly launched nodes")
    p.add_argument("--hold", action="store_true",
                   help="keep the nodes in hold (to log in) instead of returning them as used")
    p.add_argument("--reason", default="held by nodepool request",
                   help="with --hold: the comment recorded on the held nodes")
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    return parser


def _load_config(args: argparse.Namespace):
    """The config for a command: only its ZooKeeper keys must be valid (nodepool/config/files.py)."""
    from nodepool.config import ConfigError, ConfigFiles
    try:
        config, problems = ConfigFiles(args.config, args.secure).load_for_zookeeper()
    except ConfigError as e:
        raise _ConfigInvalid(str(e)) from None
    if problems:
        where = ", ".join(dict.fromkeys(p.file for p in problems))
        summary = (f"{where} has {len(problems)} problem(s) (run `nodepool config-validate` "
                   f"for details)")
        if args.command in NEEDS_WHOLE_CONFIG:
            raise _ConfigInvalid(f"{args.command} reads the {NEEDS_WHOLE_CONFIG[args.command]} "
                                 f"of the configuration, and {summary}")
        print(f"nodepool: warning: {summary}; only its ZooKeeper settings are used",
              file=sys.stderr)
    return config


# Commands that read more of the config than its ZooKeeper keys, and what they read.
NEEDS_WHOLE_CONFIG = {"info": "providers", "image-build": "diskimages",
                      "alien-image-list": "providers"}


class _ConfigInvalid(NodepoolError):
    pass


@contextlib.contextmanager
def _config_warnings():
    """The loader's warnings (keys that load but do nothing, on the `nodepool.config`
    logger; driver plug-ins that fail to load, on `nodepool.drivers`; the daemon logs
    both) gathered for config-validate to print."""
    warned: list[str] = []

    class Gather(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warned.append(record.getMessage())

    loggers = [logging.getLogger(name) for name in ("nodepool.config", "nodepool.drivers")]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    handler = Gather(logging.WARNING)
    for logger in loggers:
        # Gathered whatever the log level (the command logs errors only), and printed
        # once, by config-validate, not also by the root logger's handler.
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield warned
    finally:
        for logger, (level, propagate) in zip(loggers, saved):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def cmd_config_validate(args: argparse.Namespace) -> int:
    from nodepool.config import ConfigFiles
    with _config_warnings() as warned:
        problems = ConfigFiles(args.config, args.secure).problems()
    for line in dict.fromkeys(warned):
        print(f"{args.config}: warning: {line}", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{args.config}: {len(problems)} problem(s) found", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.config}: configuration is valid")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.command == "config-validate":
        return cmd_config_validate(args)
    config = _load_config(args)
    zk = ZooKeeperClient.from_config(config)
    timeout = args.zk_timeout if args.zk_timeout is not None else min(zk.timeout, 10.0)
    zk.connect(timeout=timeout)
    try:
        if args.command == "list":
            return node_cmds.cmd_list(args, zk)
        if args.command == "delete":
            return node_cmds.cmd_delete(args, zk)
        if args.command == "hold":
            return node_cmds.cmd_hold(args, zk)
        if args.command == "info":
            return node_cmds.cmd_info(args, zk, config)
        if args.command == "request-list":
            return request_cmds.cmd_request_list(args, zk)
        if args.command == "request":
            return request_cmds.cmd_request(args, zk)
        if args.command in table_cmds.COMMANDS:
            return table_cmds.COMMANDS[args.command][0](args, zk)
        if args.command in admin_cmds.COMMANDS:
            return admin_cmds.COMMANDS[args.command](args, zk)
        if args.command == "alien-image-list":
            return alien_cmd.cmd_alien_image_list(args, zk, config)
        if args.command in image_cmds.COMMANDS:
            return image_cmds.COMMANDS[args.command](args, zk, config)
        if args.command == "request-explain":
            return explain_cmd.cmd_request_explain(args, zk)
        raise AssertionError(args.command)
    finally:
        zk.disconnect()


def setup_logging(args: argparse.Namespace) -> None:
    """-l FILE as the launcher reads it; else errors only (--debug: everything) on stderr."""
    if args.logconfig:
        from nodepool.launcher.main import load_logging_config
        load_logging_config(args.logconfig)
        return
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.debug:
        # kazoo logs every failed connection attempt with a traceback.
        logging.getLogger("kazoo").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args)
    except Exception as e:   # whatever the logging module or YAML says of a bad file
        print(f"nodepool: logging config {args.logconfig}: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return run(args)
    except ZooKeeperUnavailable as e:
        print(f"nodepool: {e}", file=sys.stderr)
        return EXIT_ZOOKEEPER
    except (NotFound, LockFailed, _ConfigInvalid, NodepoolError) as e:
        print(f"nodepool: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("nodepool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `nodepool list | head -1`: the reader has all it wanted. Nothing more is
        # written (the interpreter's own flush at exit would fail again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())
