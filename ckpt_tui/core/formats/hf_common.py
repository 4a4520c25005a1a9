"""What Hugging Face folders share across weight formats: the sharding index and config.json."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckpt_tui.core.errors import CkptError
from ckpt_tui.core.model import Checkpoint, FileEntry, Kind, TensorEntry
from ckpt_tui.core.scan import ScanEntry, ScanReport, tree_size

HF_STEP = re.compile(r"checkpoint-(\d+)$")

CONFIG_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "n_embd",
    "num_hidden_layers",
    "n_layer",
    "num_attention_heads",
    "n_head",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "torch_dtype",
    "dtype",
    "tie_word_embeddings",
)


# (alias, owner) pairs transformers ties when config.tie_word_embeddings is true (its default)
TIED_EMBEDDINGS = (
    ("lm_head.weight", "transformer.wte.weight"),
    ("lm_head.weight", "model.embed_tokens.weight"),
    ("lm_head.weight", "model.decoder.embed_tokens.weight"),
)


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise CkptError(path, "file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CkptError(path, f"not valid JSON ({exc})") from None
    except OSError as exc:
        raise CkptError(path, f"cannot read: {exc.strerror}") from None


def config_summary(folder: Path) -> tuple[dict[str, Any], list[FileEntry]]:
    """The interesting keys of config.json (if any) and its FileEntry."""
    path = folder / "config.json"
    if not path.is_file():
        return {}, []
    data = read_json(path)
    if not isinstance(data, dict):
        raise CkptError(path, "expected a JSON object")
    summary = {k: data[k] for k in CONFIG_KEYS if k in data}
    return summary, [FileEntry("config.json", path.stat().st_size, "config")]


def read_index(path: Path) -> dict[str, str]:
    """weight_map of a *.index.json: tensor name -> shard file name."""
    data = read_json(path)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not set(map(type, weight_map.values())) <= {str}:  # JSON: str or not
        raise CkptError(path, "index has no 'weight_map' object of tensor name -> shard file")
    return weight_map


def require_shards(index_path: Path, weight_map: dict[str, str], present: set[str] = frozenset()) -> list[str]:
    """The shard files the index names, in order; each must exist (`present`: names known to be files)."""
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if shard not in present and not (index_path.parent / shard).is_file():
            raise CkptError(index_path, f"shard '{shard}' named by the index is missing")
    return shards


def check_index(
    index_path: Path,
    weight_map: dict[str, str],
    found: dict[str, list[TensorEntry]],
    unlisted: dict[str, str] | None = None,
) -> None:
    """The index and the shards must agree: every tensor where the index says, and nothing unlisted.

    `unlisted` (tensor name -> file) locates tensors in files the index does not name, for the message.
    """
    located = {t.name: t.file for tensors in found.values() for t in tensors}
    if located == weight_map:
        return  # the usual case, checked in one comparison
    missing = [n for n, f in weight_map.items() if located.get(n) != f]
    if missing:
        name = missing[0]
        where = located.get(name)
        elsewhere = (unlisted or {}).get(name)
        if where:
            detail = f"is in '{where}'"
        elif elsewhere:
            detail = f"is in '{elsewhere}', a file the index does not list"
        else:
            detail = "is in no shard"
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CkptError(index_path, f"index puts '{name}' in '{weight_map[name]}' but it {detail}{more}")
    extra = [n for n in located if n not in weight_map]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CkptError(index_path, f"shard '{located[extra[0]]}' holds '{extra[0]}', which the index does not list{more}")


def finish(ckpt: Checkpoint) -> Checkpoint:
    """Common facts for HF folders: dtype of the weights and tied embeddings from config.json."""
    dtypes = ckpt.dtypes
    if dtypes:
        ckpt.compute_dtype = max(dtypes.items(), key=lambda kv: kv[1][1])[0]
    if ckpt.config and ckpt.config.get("tie_word_embeddings") is not False:
        # transformers saves one copy of tied embeddings; list the alias like the other formats do
        by_name = {t.name: t for t in ckpt.tensors}
        for alias, owner in TIED_EMBEDDINGS:
            if alias not in by_name and owner in by_name:
                ckpt.shared_params.setdefault(alias, owner)
                o = by_name[owner]
                ckpt.tensors.append(TensorEntry(alias, o.shape, o.dtype, o.file, o.nbytes, tied_to=owner))
    return ckpt


EntriesFn = Callable[[Path, Path], list[TensorEntry]]


def read_weight_files(
    ckpt: Checkpoint,
    weight_files: list[Path],
    suffix: str,
    entries: EntriesFn,
    cheap: bool,
    sizes: dict[Path, int] | None = None,
) -> dict[str, list[TensorEntry]]:
    """Fill ckpt (a folder) from its index or, without one, from every weight file; returns shard -> entries.

    `cheap`: entries() only reads headers, so files the index ignores may be read to explain a mismatch.
    `sizes`: file sizes entries() learned while reading (path -> bytes), so they are not asked for again.
    """
    sizes = sizes if sizes is not None else {}
    folder = ckpt.path
    ckpt.config, ckpt.files = config_summary(folder)
    indexes = sorted(folder.glob(f"*{suffix}.index.json"))
    if indexes:
        index = indexes[0]
        weight_map = read_index(index)
        ckpt.files.append(FileEntry(index.name, index.stat().st_size, "index"))
        here = str(folder)
        present = {p.name for p in weight_files if os.path.dirname(p) == here}
        paths = {shard: folder / shard for shard in require_shards(index, weight_map, present)}
        found = {shard: entries(path, folder) for shard, path in paths.items()}
        listed = set(weight_map.values())
        unlisted = [p for p in weight_files if p.name not in listed]
        located = {t.name: t.file for p in unlisted for t in _entries_or_none(entries, p, folder)} if cheap else {}
        check_index(index, weight_map, found, located)
        if unlisted:
            names = ", ".join(p.name for p in unlisted)
            ckpt.warnings.append(f"{len(unlisted)} {suffix} file(s) not in the index, ignored: {names}")
    else:
        if not weight_files:
            raise CkptError(folder, f"no {suffix} weight files")
        if len(weight_files) > 1:
            ckpt.warnings.append(f"{len(weight_files)} {suffix} files and no index: read them all")
        paths = {p.name: p for p in weight_files}
        found = {p.name: entries(p, folder) for p in weight_files}
    seen: dict[str, str] = {}
    for shard, tensors in found.items():
        path = paths[shard]
        size = sizes.get(path)
        ckpt.files.append(FileEntry(shard, path.stat().st_size if size is None else size, "shard"))
        count = len(seen)
        seen.update(dict.fromkeys([t.name for t in tensors], shard))
        if len(seen) != count + len(tensors):  # a name seen before: find it (rare, so the slow way)
            earlier: dict[str, str] = {}
            for s, ts in found.items():
                for t in ts:
                    if t.name in earlier:
                        raise CkptError(folder, f"tensor '{t.name}' is stored twice: in '{earlier[t.name]}' and '{s}'")
                    earlier[t.name] = s
        ckpt.tensors.extend(tensors)
    return found


def _entries_or_none(entries: EntriesFn, path: Path, root: Path) -> list[TensorEntry]:
    """Entries of a file the index ignores: only used to explain a mismatch, so a bad one is skipped."""
    try:
        return entries(path, root)
    except CkptError:
        return []


def scan_entry_of(kind: Kind) -> Callable[[Path, ScanReport], ScanEntry]:
    """The scan entry of an HF folder: its size, the Trainer's step, how many weight files (either format)."""

    def entry(folder: Path, _report: ScanReport) -> ScanEntry:
        shards = sum(1 for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
        return ScanEntry(kind, folder, tree_size(folder), hf_step(folder), detail=f"{shards} weight file(s)")

    return entry


def hf_step(folder: Path) -> int | None:
    """The step of an HF Trainer checkpoint folder: trainer_state.json, else the checkpoint-N name."""
    state = folder / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text())["global_step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    match = HF_STEP.search(folder.name)
    return int(match.group(1)) if match else None


def config_dirs(ckpt: Checkpoint) -> tuple[Path, ...]:
    """Where config.json of an HF checkpoint sits: beside its weights."""
    return (ckpt.path.parent if ckpt.path.is_file() else ckpt.path,)
