"""``syncline demo``: the main demo (a shop through four views, see :mod:`.tour`) and
``syncline demo dual-writes`` (why not to write to several stores, see :mod:`.dual_writes`)."""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    if getattr(args, "scenario", "shop") == "dual-writes":
        from syncline.demo.dual_writes import main as dual_writes_main

        return dual_writes_main(args)
    from syncline.demo.tour import main as tour_main

    return tour_main(args)


__all__ = ["main"]
