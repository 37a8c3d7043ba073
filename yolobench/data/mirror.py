"""The data set as Ultralytics trains on it: a yolobench-owned view under the cache, real folders of symbolic
links to the user's images and labels and a copy of the data yaml whose `path:` is the view. Ultralytics writes
`labels/*.cache` beside the labels it reads (and would rewrite a JPEG it finds cut short); in the view it writes
there, and the user's folders stay as they were. It also resolves a relative `path:` against the working
directory, where yolobench resolves it against the yaml's folder: in the view it trains on exactly the files
yolobench checked.

Entries and files keep their place relative to the data root, so the view's content fingerprint (the training
stage's cache key, stages/train.py) is the original's: a model trained before the view existed is reused."""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import yaml

from yolobench.data.dataset import image_list, label_path, load_dataset, read_config, split_entries
from yolobench.errors import SweepStopped
from yolobench.keys import digest

SPLITS = ("train", "val")
OUTSIDE = "_outside"  # where files that lie outside the data root go in the view (their absolute path below it)


def _place(path: Path, root: Path) -> Path:
    """A file's or folder's place in the view: its path under the data root, or under OUTSIDE if it lies elsewhere."""
    relative = os.path.relpath(path, root)
    if relative == ".." or relative.startswith(".." + os.sep):
        return Path(OUTSIDE, *Path(os.path.abspath(path)).parts[1:])
    return Path(relative)


def _state(path: Path) -> list[int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return [status.st_size, status.st_mtime_ns]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(os.path.abspath(target))


def _write_view(staging: Path, view: Path, yaml_path: Path) -> None:
    """Fill `staging` with the view that will live at `view` (the paths written in its files name `view`)."""
    dataset = load_dataset(yaml_path)
    root = dataset.root or dataset.yaml_path.parent
    config = read_config(dataset.yaml_path)
    for image in dict.fromkeys(dataset.train_images + dataset.val_images):
        placed = staging / _place(image, root)
        _link(image, placed)
        label, view_label = label_path(image), label_path(placed)
        if staging not in view_label.parents:
            raise SweepStopped(f"the cache folder {view} holds a folder named 'images'; Ultralytics would look for "
                               "the training labels outside it: use a --home or --cache-dir without one")
        if label.is_file():
            _link(label, view_label)
    for split in SPLITS:
        entries = split_entries(root, config.get(split))
        for entry in entries:
            if entry.suffix == ".txt" and entry.is_file():  # a list of images: the same list, of the view's links
                listed = [str(view / _place(image, root)) for _, image in image_list(entry, root)]
                copy = staging / _place(entry, root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text("".join(f"{line}\n" for line in listed))
        if entries:
            placed = [str(_place(entry, root)) for entry in entries]
            config[split] = placed if isinstance(config[split], list) else placed[0]
    config["path"] = str(view)
    (staging / dataset.yaml_path.name).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


@functools.lru_cache(maxsize=16)  # a sweep builds many variants of one data set; a process sees it as it started
def training_view(yaml_path: Path, folder: Path) -> Path:
    """The view's data yaml (made under `folder` once per state of the data set: a changed or added file makes a
    new one). Workers sharing the cache may make the same view at once: the first one renamed into place wins."""
    dataset = load_dataset(Path(yaml_path))
    files = [(str(image), _state(image), _state(label_path(image)))
             for image in dict.fromkeys(dataset.train_images + dataset.val_images)]
    key = digest({"yaml": str(dataset.yaml_path), "config": dataset.yaml_path.read_text(), "files": files})
    view = Path(folder).resolve() / key
    done = view / dataset.yaml_path.name
    if done.is_file():
        return done
    staging = view.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_view(staging, view, dataset.yaml_path)
        staging.replace(view)
    except OSError:
        if not done.is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return done
