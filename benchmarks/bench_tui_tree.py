"""A 100k-tensor checkpoint: listing it, building its tree, and showing the tree in the app without a stall.

    .venv/bin/python benchmarks/bench_tui_tree.py [--layers 1000] [--repeat 5] [--tui-repeat 3] [--no-tui]

Builds (once, cached in ``.cache/bench/moe-<N>/``) one ``model.safetensors`` holding ``--layers`` x 100
tensors plus embeddings, final norm and lm_head (100,003 tensors by default; an MoE-shaped name set:
attention, norms, router and 31 experts x 3 projections per layer) with a real header and a sparse data
section (``truncate``: no disk). Also reuses bench_inspect's Llama-2-70B folder (723 tensors, 30 shards)
as the everyday reference, measured side by side.

Core, in-process, median of ``--repeat`` rounds (each from a freshly collected heap): the raw-header floor
(read + ``json.loads``, as is and with the GC paused), ``open_checkpoint``, ``build_tree`` and
``filter_tree`` (a narrow and a match-everything query).

App, headless (``App.run_test`` + Pilot, 160 x 50), median of ``--tui-repeat`` fresh apps per checkpoint,
alternating. The clock starts when the browser opens the checkpoint (``app.open_checkpoint``, what Enter
does); a "paint" is a screen update the compositor produced (``App._display``, what a terminal is sent):

- first paint: the checkpoint screen's first update (header, facts placeholder, loading indicator);
- populated: the first update showing the tree, where *populated* means what a fully loaded screen has
  before the user touches anything: ``ParamTree.show`` has run, so every top-level group, every small
  group and single-child chain that opens by itself, and every folded numbered stack (``model.layers``
  x N) is a row; children of folded groups are added when first expanded (the tree is lazy), and that
  cost is measured by the interactions below;
- interactions, each from the key press to the last paint it caused, in this order: the filter (``/``
  then typing ``q_proj`` one key at a time; each key re-filters and shows every match expanded: the
  worst key is reported), ``Esc`` (clear it: the full tree again), expand ``model.layers`` (N block
  rows), ``e`` (expand everything: every tensor a row), ``G`` (to the last row), ``E`` (collapse all);
- stall: the longest time the UI event loop did not run, from a 2 ms asyncio heartbeat in the same loop
  (over about 100 ms is visible: keys and repaints wait for it); "of it GC": the longest cyclic-GC pass
  in that window (``gc.callbacks``), which stops every thread.

Prints medians and ratios. Reports numbers only; no asserts (the tests check correctness).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
CACHE = REPO / ".cache" / "bench"
BUILD_VERSION = "1"

HIDDEN, EXPERT, VOCAB, EXPERTS = 1024, 256, 32000, 31


def moe_tensors(layers: int) -> list[tuple[str, list[int]]]:
    """(name, shape): 100 per layer (4 attention, 2 norms, 1 router, 31 experts x 3) + embed, norm, head."""
    out = [("model.embed_tokens.weight", [VOCAB, HIDDEN])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + f"self_attn.{x}_proj.weight", [HIDDEN, HIDDEN]) for x in "qkvo"]
        out += [(p + "input_layernorm.weight", [HIDDEN]), (p + "post_attention_layernorm.weight", [HIDDEN])]
        out.append((p + "mlp.gate.weight", [EXPERTS, HIDDEN]))
        for e in range(EXPERTS):
            q = f"{p}mlp.experts.{e}."
            out += [(q + "gate_proj.weight", [EXPERT, HIDDEN]), (q + "up_proj.weight", [EXPERT, HIDDEN]),
                    (q + "down_proj.weight", [HIDDEN, EXPERT])]
    out += [("model.norm.weight", [HIDDEN]), ("lm_head.weight", [VOCAB, HIDDEN])]
    return out


def build_moe(layers: int) -> Path:
    from bench_inspect import write_sparse_safetensors

    out = CACHE / f"moe-l{layers}"
    path = out / "model.safetensors"
    done = out / "DONE"
    if done.is_file() and done.read_text().strip() == BUILD_VERSION:
        return path
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    tensors = moe_tensors(layers)
    start = time.perf_counter()
    size = write_sparse_safetensors(path, tensors, "BF16", 2)
    done.write_text(BUILD_VERSION + "\n")
    print(f"built {path}: {len(tensors):,} tensors, {size / 1e9:.1f} GB apparent, "
          f"{path.stat().st_blocks * 512 / 1e6:.1f} MB on disk, in {time.perf_counter() - start:.1f} s")
    return path


def raw_header(path: Path) -> int:
    """The floor for one file: read the length and the header, json.loads it."""
    count = 0
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.name.endswith(".safetensors"))
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            count += len(json.loads(fh.read(n))) - 1
    return count


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


# ------------------------------------------------------------------------------------------- core


def core_rows(targets: dict[str, Path], repeat: int) -> dict[str, dict[str, float]]:
    from ckpt_tui.core.bulk import paused_gc
    from ckpt_tui.core.inspect import open_checkpoint
    from ckpt_tui.core.tree import build_tree, filter_tree

    def raw_paused(path: Path) -> int:
        with paused_gc():
            return raw_header(path)

    steps: list[tuple[str, Callable[[Path, dict], object]]] = [
        ("raw", lambda p, st: raw_header(p)),
        ("raw, GC paused", lambda p, st: raw_paused(p)),
        ("open", lambda p, st: st.update(ckpt=open_checkpoint(p))),
        ("tree", lambda p, st: st.update(root=build_tree(st["ckpt"].tensors))),
        ("filter narrow", lambda p, st: filter_tree(st["root"], "q_proj")),
        ("filter all", lambda p, st: filter_tree(st["root"], "weight")),
    ]
    out: dict[str, dict[str, float]] = {}
    for label, path in targets.items():
        times: dict[str, list[float]] = {k: [] for k, _ in steps}
        state: dict = {}
        for _ in range(repeat + 1):  # the first round warms imports and the page cache; dropped
            state.clear()
            gc.collect()  # each round starts from the same heap: GC passes scale with what is alive
            for key, step in steps:
                t0 = time.perf_counter()
                step(path, state)
                times[key].append(time.perf_counter() - t0)
        out[label] = {k: median_ms(v[1:]) for k, v in times.items()}
        out[label]["tensors"] = len(state["ckpt"].tensors)
        out[label]["nodes"] = sum(1 for _ in state["root"].walk())
    return out


# -------------------------------------------------------------------------------------------- app


class Probe:
    """Paint times and the longest event-loop gaps, recorded from inside the app's loop."""

    def __init__(self) -> None:
        self.paints: list[tuple[float, object]] = []
        self.beats: list[tuple[float, float]] = []  # (time the gap ended, its length)
        self.collections: list[list[float]] = []  # [start, seconds] of each cyclic GC pass (it stops every thread)
        self._task: asyncio.Task | None = None

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.collections.append([time.perf_counter(), 0.0])
        elif self.collections:
            self.collections[-1][1] = time.perf_counter() - self.collections[-1][0]

    def stop(self) -> None:
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def gc_pause(self, t0: float, t1: float) -> float:
        """The longest GC pass that overlaps [t0, t1] (seconds)."""
        return max((d for start, d in self.collections if start <= t1 and start + d >= t0), default=0.0)

    def start(self) -> None:
        gc.callbacks.append(self._gc)

        async def beat() -> None:
            last = time.perf_counter()
            while True:
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                self.beats.append((now, now - last))
                last = now

        self._task = asyncio.get_running_loop().create_task(beat())

    def stall(self, t0: float, t1: float) -> float:
        """The longest gap between heartbeats that overlaps [t0, t1] (seconds)."""
        return max((gap for end, gap in self.beats if end >= t0 and end - gap <= t1), default=0.0)

    def paint_after(self, t0: float, pred: Callable[[object], bool] = lambda s: True) -> float | None:
        return next((t for t, state in self.paints if t >= t0 and pred(state)), None)


def make_app(root: Path, probe: Probe):
    from ckpt_tui.tui.app import CkptApp
    from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
    from ckpt_tui.tui.widgets.param_tree import ParamTree

    class BenchApp(CkptApp):
        CSS_PATH = str(Path(sys.modules[CkptApp.__module__].__file__).parent / CkptApp.CSS_PATH)  # not ours

        def _display(self, screen, renderable) -> None:  # noqa: ANN001
            if renderable is not None:
                state = None
                if isinstance(screen, CheckpointScreen):
                    tree = screen.query_one(ParamTree)
                    state = ("tree" if screen.tree_root is not None and tree.root.children else "loading", tree)
                probe.paints.append((time.perf_counter(), state))
            super()._display(screen, renderable)

    return BenchApp(root)


async def wait_for(cond: Callable[[], object], timeout: float = 120.0, what: str = "") -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise SystemExit(f"timed out waiting in the app for {what or cond}")
        await asyncio.sleep(0.001)


async def settle(probe: Probe, t0: float, quiet: float = 0.1) -> float:
    """Wait until the app has painted nothing for `quiet` s; the time of the last paint after t0."""
    while True:
        seen, start = len(probe.paints), time.perf_counter()
        await asyncio.sleep(quiet)
        # a quiet window only counts if the loop was free during it (not one long stall)
        if len(probe.paints) == seen and time.perf_counter() - start < 1.5 * quiet:
            return max((t for t, _ in probe.paints if t >= t0), default=t0)


def tree_rows(tree) -> str:  # noqa: ANN001
    """'nodes / rows': nodes the Tree widget holds (added so far, reachable from its root) / rows shown."""
    nodes, stack = 0, list(tree.root.children)
    while stack:
        node = stack.pop()
        nodes += 1
        stack.extend(node.children)
    return f"{nodes:,} / {tree.virtual_size.height:,}"


def find_node(tree, path: str):  # noqa: ANN001, ANN201
    """The widget's node showing the ParamNode at path (among the nodes added so far), or None."""
    stack = list(tree.root.children)
    while stack:
        node = stack.pop()
        if node.data is not None and node.data.path == path:
            return node
        if node.data is not None and path.startswith(node.data.path + "."):
            stack.extend(node.children)
    return None


async def app_once(path: Path, size: tuple[int, int]) -> dict[str, float]:
    from textual.widgets import Input

    from ckpt_tui.tui.screens.browser import BrowserScreen
    from ckpt_tui.tui.screens.checkpoint import CheckpointScreen
    from ckpt_tui.tui.widgets.param_tree import ParamTree

    probe = Probe()
    app = make_app(path.parent if path.is_file() else path, probe)
    res: dict[str, float] = {}
    async with app.run_test(size=size) as pilot:
        probe.start()
        await wait_for(lambda: isinstance(app.screen, BrowserScreen) and not app.screen.scanning, what="the scan")
        await pilot.pause()

        async def timed(name: str, action: Callable[[], object], done: Callable[[], object]) -> None:
            t0 = time.perf_counter()
            r = action()
            if asyncio.iscoroutine(r):
                await r
            await wait_for(done, what=name)
            t1 = await settle(probe, t0)
            res[name] = t1 - t0
            res[name + " stall"] = probe.stall(t0, t1)
            res[name + " gc"] = probe.gc_pause(t0, t1)

        t0 = time.perf_counter()
        app.open_checkpoint(path)
        await wait_for(lambda: probe.paint_after(t0, lambda s: s is not None), what="first paint")
        res["first paint"] = probe.paint_after(t0, lambda s: s is not None) - t0  # type: ignore[operator]
        await wait_for(lambda: probe.paint_after(t0, lambda s: s is not None and s[0] == "tree"), what="the tree")
        t_pop = probe.paint_after(t0, lambda s: s is not None and s[0] == "tree")
        assert t_pop is not None
        res["populated"] = t_pop - t0
        res["populated stall"] = probe.stall(t0, t_pop)
        res["populated gc"] = probe.gc_pause(t0, t_pop)
        screen = app.screen
        assert isinstance(screen, CheckpointScreen)
        tree = screen.query_one(ParamTree)
        res["rows at populated"] = tree_rows(tree)
        await pilot.pause()

        # the filter on the fresh tree: each key re-filters and shows every match expanded
        await pilot.press("slash")
        await pilot.pause()
        field = screen.query_one("#param-filter", Input)
        keys = "q_proj"
        t_first = time.perf_counter()
        worst_key = 0.0
        for i, key in enumerate(keys):
            t0 = time.perf_counter()
            await pilot.press("underscore" if key == "_" else key)
            await wait_for(lambda: field.value == keys[: i + 1], what=f"filter key {key!r}")
            worst_key = max(worst_key, await settle(probe, t0) - t0)
        res["filter: type q_proj, worst key"] = worst_key
        res["filter: type q_proj, worst key stall"] = probe.stall(t_first, time.perf_counter())
        res["filter: type q_proj, worst key gc"] = probe.gc_pause(t_first, time.perf_counter())
        res["rows after filter"] = tree_rows(tree)
        await timed("Esc: clear the filter", lambda: pilot.press("escape"), lambda: not field.value)

        layers = find_node(tree, "model.layers")
        if layers is not None:
            tree.move_cursor(layers)
            await pilot.pause()
            await timed("expand model.layers", lambda: pilot.press("right"), lambda: layers.is_expanded)
        await timed("e: expand all", lambda: pilot.press("e"), lambda: True)
        res["rows after e"] = tree_rows(tree)
        await timed("G: last row", lambda: pilot.press("G"), lambda: True)
        await timed("E: collapse all", lambda: pilot.press("E"), lambda: True)
        probe.stop()
        app.exit()
    return res


def app_rows(targets: dict[str, Path], repeat: int, size: tuple[int, int]) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in targets}
    for _ in range(repeat):
        for label, path in targets.items():  # alternate, so noise from other work hits both
            gc.collect()  # each app starts from a clean heap, not with the last one's garbage to collect
            runs[label].append(asyncio.run(app_once(path, size)))
    out: dict[str, dict] = {}
    for label, rs in runs.items():
        out[label] = {k: rs[-1][k] if isinstance(rs[0][k], str) else statistics.median(r[k] for r in rs) for k in rs[0]}
        for k in rs[0]:
            if k.endswith(" stall"):  # a stall is about the worst case: keep the longest seen, and its GC part
                worst = max(rs, key=lambda r: r[k])
                out[label][k + " max"] = (worst[k], worst[k[: -len(" stall")] + " gc"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5, help="core rounds; medians are reported")
    ap.add_argument("--tui-repeat", type=int, default=3, help="fresh apps per checkpoint; medians are reported")
    ap.add_argument("--no-tui", action="store_true")
    args = ap.parse_args()
    from bench_inspect import build as build_llama

    targets = {"llama-2-70b (723)": build_llama(30), f"moe {args.layers} layers": build_moe(args.layers)}
    core = core_rows(targets, args.repeat)
    big, small = list(targets)[1], list(targets)[0]
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs; core: median of {args.repeat}")
    print(f"{'core, in-process (ms)':32s} " + " ".join(f"{k:>20s}" for k in targets))
    names = {"raw": "raw header (floor)", "raw, GC paused": "raw header, GC paused", "open": "open_checkpoint",
             "tree": "build_tree", "filter narrow": "filter_tree('q_proj')", "filter all": "filter_tree('weight')"}
    counts = (f"{int(core[k]['tensors']):>11,d} / {int(core[k]['nodes']):<7,d}" for k in targets)
    print(f"{'tensors / tree nodes':32s} " + " ".join(counts))
    for key, name in names.items():
        print(f"{name:32s} " + " ".join(f"{core[k][key]:20.1f}" for k in targets))
    b = core[big]
    worker = (f"{core[k]['open'] + core[k]['tree']:20.1f}" for k in targets)
    print(f"{'open + tree (the worker)':32s} " + " ".join(worker))
    print(f"{big}: open_checkpoint x{b['open'] / b['raw']:.2f} the raw header "
          f"(x{b['open'] / b['raw, GC paused']:.2f} of it with the GC paused); "
          f"open + tree x{(b['open'] + b['tree']) / b['raw']:.2f}")
    if args.no_tui:
        return
    app = app_rows(targets, args.tui_repeat, (160, 50))
    print(f"\napp, headless 160x50, median of {args.tui_repeat} fresh apps each (ms; stall = longest UI-loop gap, "
          "GC = longest collection in it)")
    print(f"{'':44s} " + " ".join(f"{k:>20s}" for k in targets) + f" {'ratio':>7s}")
    for key in app[big]:
        if key.endswith((" gc", " max")):
            continue
        if key.startswith("rows"):
            print(f"{key + ' (nodes / shown)':44s} " + " ".join(f"{app[k][key]:>20s}" for k in targets))
            continue
        if key.endswith(" stall"):
            gc_key = key[: -len(" stall")] + " gc"
            print(f"{key + ' (of it GC)':44s} " + " ".join(
                f"{app[k][key] * 1e3:11.1f} ({app[k][gc_key] * 1e3:5.1f})" for k in targets))
            print(f"{'  worst of the runs (of it GC)':44s} " + " ".join(
                f"{app[k][key + ' max'][0] * 1e3:11.1f} ({app[k][key + ' max'][1] * 1e3:5.1f})" for k in targets))
            continue
        ratio = app[big][key] / app[small][key] if app[small][key] else float("nan")
        print(f"{key:44s} " + " ".join(f"{app[k][key] * 1e3:20.1f}" for k in targets) + f" {ratio:7.1f}")

if __name__ == "__main__":
    main()
