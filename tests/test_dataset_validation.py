"""Data sets as users have them: the forms of an Ultralytics data yaml Ultralytics accepts are accepted, and a
data set broken on purpose (a class id beyond the names, 4-number lines, corrupt or truncated images,
coordinates outside [0, 1]) stops the sweep before anything is written, with one message naming the file and
the line. Changing the data makes finished variants count as not done; the user's folders stay untouched."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import optuna
import pytest
import yaml

from tests.fakes import FakeBuilder, FakeRuntime, fake_sweep_file, register_fake_runtime
from yolobench import search, tracking
from yolobench.build import Built
from yolobench.cache import BuildOutput
from yolobench.cli import main
from yolobench.data.dataset import label_path, load_dataset, read_labels
from yolobench.data.mirror import training_view
from yolobench.data.synthetic import make_synthetic_dataset
from yolobench.data.validate import DataUse, check_dataset, check_model_classes, open_checked
from yolobench.errors import DataInvalid, SweepStopped
from yolobench.keys import variant_key
from yolobench.measure.accuracy import evaluate
from yolobench.measure.harness import LATENCY_IMAGES, EvalData
from yolobench.runner import Sweep, SweepSettings
from yolobench.space import Space
from yolobench.spec import parse_spec
from yolobench.stages.train import dataset_fingerprint

NAMES = ["circle", "square", "triangle", "cross"]  # the synthetic set's classes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid set of 4 train and 12 val images, made once; each test copies it and breaks its copy."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), train_images=4, val_images=12,
                                  image_size=64, seed=3).parent


@pytest.fixture()
def fake_runtime():
    register_fake_runtime()
    FakeRuntime.reset()
    yield FakeRuntime
    FakeRuntime.reset()


def user_copy(synthetic: Path, where: Path, **config: object) -> Path:
    """The set copied to `where` as a user keeps one: a data yaml beside the folders, no `path:`."""
    shutil.copytree(synthetic, where, ignore=shutil.ignore_patterns("data.yaml", "synthetic.json"))
    entries = {"train": "images/train", "val": "images/val", "names": NAMES, **config}
    (where / "data.yaml").write_text(yaml.safe_dump({k: v for k, v in entries.items() if v is not None}))
    return where / "data.yaml"


def val_images(data_yaml: Path) -> list[Path]:
    return sorted((data_yaml.parent / "images" / "val").glob("*.jpg"))


def labelled(data_yaml: Path, index: int = 0) -> Path:
    """The label file of a val image that has objects (the index-th such)."""
    return [label_path(p) for p in val_images(data_yaml) if label_path(p).read_text().strip()][index]


def problem_of(data_yaml: Path, use: DataUse = DataUse(train=True)) -> str:
    with pytest.raises(DataInvalid) as raised:
        check_dataset(load_dataset(data_yaml), use)
    return str(raised.value)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder` with its size, mtime and content hash."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- what Ultralytics accepts --------------------------------------------------------------------------------
def test_names_as_a_list_or_a_mapping_and_path_absent_or_relative_give_one_data_set(synthetic: Path,
                                                                                    tmp_path: Path) -> None:
    as_list = load_dataset(user_copy(synthetic, tmp_path / "sets" / "user"))
    mapping = tmp_path / "sets" / "mapping.yaml"  # beside the set, `path:` relative to the yaml's folder
    mapping.write_text("path: user\ntrain: images/train\nval: images/val\n"
                       "names:\n  '0': circle\n  1: square\n  2: triangle\n  3: cross\n")
    as_mapping = load_dataset(mapping)
    assert as_list.names == as_mapping.names == dict(enumerate(NAMES))
    assert as_list.val_images == as_mapping.val_images and len(as_list.val_images) == 12
    assert as_list.root == as_mapping.root == (tmp_path / "sets" / "user").resolve()
    gaps = tmp_path / "sets" / "gaps.yaml"
    gaps.write_text("path: user\ntrain: images/train\nval: images/val\nnames: {0: circle, 2: triangle}\n")
    assert problem_of(gaps).startswith(f"{gaps}: `names` ids are [0, 2]; Ultralytics numbers classes 0 to 1")


def test_splits_as_a_folder_a_list_of_folders_or_a_txt_list_of_images(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    root = data_yaml.parent
    (root / "images" / "val2").mkdir()
    for image in val_images(data_yaml)[6:]:
        image.rename(root / "images" / "val2" / image.name)
        label = label_path(image)
        (root / "labels" / "val2").mkdir(exist_ok=True)
        label.rename(root / "labels" / "val2" / label.name)
    train = sorted((root / "images" / "train").glob("*.jpg"))
    (root / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in train[:3]))
    data_yaml.write_text(yaml.safe_dump({"train": "train.txt", "val": ["images/val", "images/val2"], "names": NAMES}))
    dataset = check_dataset(load_dataset(data_yaml), DataUse(train=True))
    assert len(dataset.val_images) == 12 and {p.parent.name for p in dataset.val_images} == {"val", "val2"}
    assert dataset.train_images == tuple(train[:3])


def test_sizes_grayscale_png_and_jpeg_mixed_missing_and_empty_labels_are_read(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    images = val_images(data_yaml)
    colour = cv2.imread(str(images[0]))
    cv2.imwrite(str(images[0].with_suffix(".png")), cv2.cvtColor(cv2.resize(colour, (90, 50)), cv2.COLOR_BGR2GRAY))
    images[0].unlink()
    cv2.imwrite(str(images[1]), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))  # a grayscale JPEG
    label_path(images[2]).unlink()  # no label file: an image without objects
    label_path(images[3]).write_text("")
    dataset = check_dataset(load_dataset(data_yaml), DataUse(train=True))
    data = EvalData.from_dataset(dataset)
    assert [frame.shape for frame in data.latency_images[:2]] == [(50, 90, 3), (48, 64, 3)]  # gray read as BGR
    assert read_labels(images[2]).shape == read_labels(images[3]).shape == (0, 5)
    result = evaluate(lambda tensor: np.zeros((1, 8, 21), np.float32), data.val_images, data.names, 32)
    assert result.num_images == 12 and result.map50 == 0.0


def test_polygon_labels_become_the_box_of_their_points_as_ultralytics_makes_it(synthetic: Path,
                                                                              tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    label = labelled(data_yaml)
    label.write_text("2 0.1 0.2 0.5 0.1 0.4 0.7 0.2 0.6\n0 0.6 0.6 0.9 0.6 0.9 0.95\n")
    boxes = read_labels(label.parents[2] / "images" / "val" / label.with_suffix(".jpg").name)
    # x 0.1..0.5, y 0.1..0.7; x 0.6..0.9, y 0.6..0.95 (the slow test below checks it against Ultralytics' own)
    np.testing.assert_allclose(boxes, [[2, 0.3, 0.4, 0.4, 0.6], [0, 0.75, 0.775, 0.3, 0.35]], atol=1e-6)
    assert check_dataset(load_dataset(data_yaml)).fingerprint is not None


# --- broken on purpose: one message naming the file and the line ---------------------------------------------
def test_a_class_id_beyond_the_names_names_the_label_file_and_line(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    label = labelled(data_yaml, 1)
    label.write_text("1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n")
    assert problem_of(data_yaml).splitlines()[0] == (
        f"{label}, line 2: class 7 is not in the data set's names (ids 0-3 in data.yaml)")


@pytest.mark.parametrize("text, line, what", [
    ("1 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", 2, "4 numbers; a box is 'class x_center y_center width height' (5 "
                                              "numbers) and a polygon 'class x1 y1 x2 y2 x3 y3 ...'"),
    ("0 0.5 0.5 0.2\n1 0.3 0.3 0.1\n2 0.7 0.7 0.1\n", 1, "4 numbers; a box is"),  # today silently reshaped
    ("0 0.5 0.5 0.2 0.2\n0 1.5 0.5 0.1 0.1\n", 2, "coordinate 1.5 is outside [0, 1]; labels are normalised by the "
                                                  "image's width and height"),
    ("0 0.5 -0.2 0.1 0.1\n", 1, "coordinate -0.2 is outside [0, 1]"),
    ("0 0.5 abc 0.1 0.1\n", 1, "'abc' is not a number"),
    ("0 0.5 0.5 nan 0.1\n", 1, "'nan' is not a finite number"),
    ("1.5 0.5 0.5 0.1 0.1\n", 1, "class '1.5' is not a class id (a whole number from 0)"),
    ("0 0.5 0.5 0.1 0.1\n2 0.1 0.1 0.3 0.1 0.2 0.4\n", 1, "a box (5 numbers) in a file of polygons"),
])
def test_a_label_line_that_is_not_a_box_names_the_file_line_and_problem(synthetic: Path, tmp_path: Path, text: str,
                                                                       line: int, what: str) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    label = labelled(data_yaml)
    label.write_text(text)
    assert problem_of(data_yaml).startswith(f"{label}, line {line}: {what}")
    with pytest.raises(DataInvalid, match=f"line {line}: "):  # read while scoring too, not reshaped into nonsense
        read_labels(label.parents[2] / "images" / "val" / label.with_suffix(".jpg").name)


def _cut(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("index", [2, LATENCY_IMAGES + 2])  # among the latency images, and later in the split
def test_a_corrupt_or_truncated_image_is_reported_by_its_file(synthetic: Path, tmp_path: Path, index: int) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    image = val_images(data_yaml)[index]
    image.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")  # cv2.imread gives None
    assert problem_of(data_yaml).splitlines()[0] == (
        f"{image}: JPEG is truncated (no end-of-image marker FFD9); re-save or remove the image")
    image.write_bytes(b"GIF89a garbage")
    assert problem_of(data_yaml).splitlines()[0] == (
        f"{image}: OpenCV cannot decode this file as an image (corrupt, or not an image)")


def test_a_half_truncated_jpeg_that_opencv_decodes_is_caught(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    image = val_images(data_yaml)[5]
    _cut(image, 0.5)
    assert cv2.imread(str(image)) is not None  # OpenCV greys out what is missing: it would be scored silently
    assert problem_of(data_yaml).startswith(f"{image}: JPEG is truncated")
    png = image.with_suffix(".png")
    cv2.imwrite(str(png), cv2.imread(str(val_images(data_yaml)[6])))
    image.unlink()
    _cut(png, 0.9)
    assert problem_of(data_yaml).startswith(f"{png}: PNG is truncated (no IEND chunk)")


def test_a_txt_list_naming_a_missing_image_is_reported_by_its_line(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user", val="val.txt")
    listed = [f"./images/val/{p.name}" for p in val_images(data_yaml)] + ["./images/val/gone.jpg"]
    (data_yaml.parent / "val.txt").write_text("\n".join(listed) + "\n")
    assert problem_of(data_yaml).splitlines()[0] == (
        f"{data_yaml.parent / 'val.txt'}, line 13: lists {data_yaml.parent / 'images/val/gone.jpg'}, "
        "which does not exist")


def test_several_problems_are_one_message_first_problem_first(synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    labelled(data_yaml, 0).write_text("9 0.5 0.5 0.1 0.1\n")
    labelled(data_yaml, 1).write_text("0 0.5 0.5\n")
    lines = problem_of(data_yaml).splitlines()
    assert lines[0].startswith(f"{labelled(data_yaml, 0)}, line 1: class 9")
    assert lines[1].startswith(f"  also {labelled(data_yaml, 1)}, line 1: 3 numbers")
    assert lines[-1] == f"  (data set {data_yaml}: fix these files, then run the same command again)"


def test_the_train_split_is_checked_only_where_it_is_read(fake_runtime, synthetic: Path, tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    train_label = label_path(sorted((data_yaml.parent / "images" / "train").glob("*.jpg"))[0])
    train_label.write_text("5 0.5 0.5 0.1 0.1\n")
    trains = parse_spec(fake_sweep_file(data={"yaml": str(data_yaml)}))
    assert DataUse.of(trains) == DataUse(train=True) and DataUse.of(trains, measure_only=True) == DataUse()
    assert check_dataset(load_dataset(data_yaml), DataUse.of(trains, measure_only=True)).fingerprint
    assert problem_of(data_yaml, DataUse.of(trains)).startswith(f"{train_label}, line 1: class 5")


def test_a_sweep_on_a_broken_data_set_exits_2_with_one_message_and_writes_nothing_in_the_home(
        synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    label = labelled(data_yaml, 1)
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({**fake_sweep_file(data={"yaml": str(data_yaml)}),
                                          "runtime": {"name": "onnxruntime", "provider": "cpu", "threads": 1},
                                          "axes": {"scale": ["n"], "precision": ["fp32"], "imgsz": [64]},
                                          "baseline": {"scale": "n", "precision": "fp32", "imgsz": 64}}))
    home = tmp_path / "home"
    assert main(["sweep", str(sweep_file), "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"yolobench: {label}, line 1: class 7 is not in the data set's names")
    assert err.count("yolobench:") == 1 and "Traceback" not in err
    assert not home.exists()  # no MLflow db, no Optuna db, no cache, no Ultralytics settings


# --- the model's classes against the data set's -------------------------------------------------------------
def test_a_model_whose_classes_differ_from_the_data_sets_is_refused() -> None:
    names = dict(enumerate(NAMES))
    check_model_classes({"names": {str(i): n for i, n in names.items()}}, names)  # as manifests store them
    check_model_classes({"names": {**names, 4: "extra"}}, names)  # more classes, the data's first: scored as is
    check_model_classes({"num_classes": 4}, names)
    check_model_classes({}, names)  # nothing recorded: nothing to compare
    with pytest.raises(SweepStopped, match=r"^the model's class names differ from the data set's at 2 of 4 ids \(0: "
                                           r"model 'person', data set 'circle', 1: model 'car', data set 'square'\)"):
        check_model_classes({"names": {0: "person", 1: "car", 2: "triangle", 3: "cross"}}, names)
    with pytest.raises(SweepStopped, match=r"^the model has 2 classes but the data set has 4 \(class 2 'triangle'"):
        check_model_classes({"num_classes": 2}, names)


class NamedBuilder(FakeBuilder):
    """The fake builder's model, with the class names an export records in its manifest."""

    names: dict[int, str] = {0: "person", 1: "car", 2: "dog", 3: "cat"}

    def build(self, variant):  # noqa: ANN001, ANN201
        def write(work_dir: Path) -> BuildOutput:
            (work_dir / "model.onnx").write_bytes(b"named model")
            return BuildOutput("model.onnx", {"params": 1, "gflops": 0.1, "applied_by_default": [],
                                              "names": self.names})

        artifact = self.cache.get_or_build("export", {"named": 1}, None, {}, write)
        return Built(artifact, self.cache.lineage(artifact), self.describe(variant), "built")


def test_a_sweep_stops_before_timing_a_model_trained_on_other_classes(fake_runtime, fresh_home: Path,
                                                                      synthetic: Path, tmp_path: Path) -> None:
    spec = parse_spec(fake_sweep_file(data={"yaml": str(user_copy(synthetic, tmp_path / "user"))}))
    sweep = Sweep(spec, SweepSettings(home=fresh_home), runtime=FakeRuntime(), study=in_memory_study(spec))
    sweep.builder = NamedBuilder(spec, sweep.cache)
    with pytest.raises(SweepStopped, match="class names differ from the data set's at 4 of 4 ids"):
        sweep.run()
    assert [s.calls for s in FakeRuntime.sessions] == [0]  # opened, never timed nor scored


# --- the data's fingerprint decides resume ------------------------------------------------------------------
def in_memory_study(spec) -> optuna.Study:  # noqa: ANN001
    return search.open_study(optuna.storages.InMemoryStorage(), spec.name, Space.from_spec(spec), spec.search)


def test_a_trial_and_a_run_of_other_data_are_not_done_and_the_run_is_superseded(fake_runtime, fresh_home: Path) -> None:
    """The stores' side of resume, in milliseconds (the two sweeps below go through the whole loop)."""
    spec = parse_spec(fake_sweep_file())
    study, key = in_memory_study(spec), "k" * 20
    search.note_sweep(study, "parent", "data-a")
    trial = search.ask(study)
    trial.set_user_attr(search.TrialAttr.KEY, key)
    search.close_trial(study, trial, search.Outcome.MEASURED, values=[1.0, 0.5], metrics={"map50_95": 0.5},
                       run_id="run-a")
    search.record_retimed(study, key, {"latency_ms_p50": 1.0})
    assert set(search.study_state(study).done) == {key} and search.retimed(study) == {key: {"latency_ms_p50": 1.0}}
    search.note_sweep(study, "parent", "data-b")  # the data changed
    assert search.study_state(study).done == {} and search.results(study) == [] and search.retimed(study) == {}
    assert search.evaluations(study, lambda params: key) == 0

    tracker = tracking.Tracker(tracking.default_tracking_uri(fresh_home))
    experiment = tracker.experiment_id("resume")
    parent = tracker.start_run(experiment, "sweep", tags={}, params={})
    child = tracker.start_child(experiment, parent, "n-fp32", tags={tracking.VARIANT_KEY_TAG: key})
    tracker.log(child, metrics={"latency_ms_p50": 1.0, "map50_95": 0.5}, tags={tracking.DATA_FINGERPRINT_TAG: "data-a"})
    tracker.finish(child)
    assert set(tracker.tidy_children(experiment, parent, "data-a", keep=set())) == {key}  # killed before telling
    assert tracker.tidy_children(experiment, parent, "data-b", keep=set()) == {}  # of other data: not a result
    assert not tracker.run_exists(child)  # superseded


@pytest.fixture()
def resumable(fake_runtime, fresh_home: Path, tmp_path: Path):  # noqa: ANN201
    """A user's data set of 30 val images and a sweep over it (one variant, the fake runtime): `sweep()` runs it
    again on the same study and home, `runs()` lists the variant runs MLflow shows."""
    made = make_synthetic_dataset(tmp_path / "made", train_images=2, val_images=30, image_size=48, seed=5)
    shutil.copytree(made.parent, tmp_path / "user", ignore=shutil.ignore_patterns("synthetic.json"))
    data_yaml = tmp_path / "user" / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": NAMES}))
    spec = parse_spec(fake_sweep_file(data={"yaml": str(data_yaml)}, axes={
        "scale": ["n"], "precision": ["fp32"], "imgsz": [64], "knob": [1]}))
    study = in_memory_study(spec)

    class Resumable:
        images = sorted((tmp_path / "user" / "images" / "val").glob("*.jpg"))
        key = variant_key(spec, Space.from_spec(spec).baseline)

        @staticmethod
        def sweep() -> Sweep:
            run = Sweep(spec, SweepSettings(home=fresh_home), runtime=FakeRuntime(), study=study)
            run.builder = FakeBuilder(spec, run.cache)
            run.run()
            return run

        @staticmethod
        def runs() -> list:
            client = mlflow.MlflowClient(tracking.default_tracking_uri(fresh_home))
            experiment = client.get_experiment_by_name(spec.name)
            return [r for r in client.search_runs([experiment.experiment_id]) if tracking.PARENT_TAG in r.data.tags]

        @staticmethod
        def results() -> list:
            return search.results(study)

    return Resumable


@pytest.mark.slow  # two or three sweeps through the whole loop: about 2 s each test
def test_removing_val_images_makes_a_finished_variant_count_as_not_done(resumable) -> None:  # noqa: ANN001
    first = resumable.sweep()
    assert first.summary.measured == 1 and resumable.sweep().summary.measured == 0  # same data: nothing to do
    stale = resumable.runs()
    for image in resumable.images[10:]:  # 20 of 30 removed
        image.unlink()
    second = resumable.sweep()
    assert second.summary.measured == 1 and second.dataset.fingerprint != first.dataset.fingerprint
    runs = resumable.runs()
    assert len(runs) == 1 and runs[0].info.run_id != stale[0].info.run_id  # the stale run was superseded
    assert runs[0].data.tags[tracking.DATA_FINGERPRINT_TAG] == second.dataset.fingerprint
    assert [(r.key, r.run_id) for r in resumable.results()] == [(resumable.key, runs[0].info.run_id)]  # same key


@pytest.mark.slow
def test_repairing_an_image_makes_a_finished_variant_count_as_not_done(resumable) -> None:  # noqa: ANN001
    assert resumable.sweep().summary.measured == 1
    image = resumable.images[0]
    cv2.imwrite(str(image), cv2.imread(str(image)), [cv2.IMWRITE_JPEG_QUALITY, 70])  # re-encoded: same name
    assert resumable.sweep().summary.measured == 1 and len(resumable.runs()) == 1


def test_the_fingerprint_follows_content_not_location(synthetic: Path, tmp_path: Path) -> None:
    here = check_dataset(load_dataset(user_copy(synthetic, tmp_path / "here"))).fingerprint
    elsewhere = user_copy(synthetic, tmp_path / "elsewhere")
    assert check_dataset(load_dataset(elsewhere)).fingerprint == here  # copied to a measuring host
    assert check_dataset(load_dataset(elsewhere), DataUse(val_images=5)).fingerprint != here  # fewer scored
    labelled(elsewhere).write_text("0 0.5 0.5 0.25 0.25\n")
    assert check_dataset(load_dataset(elsewhere)).fingerprint != here


# --- the user's folders stay untouched ----------------------------------------------------------------------
def test_checking_scoring_and_the_training_view_leave_the_users_folder_as_it_was(fake_runtime, synthetic: Path,
                                                                                 tmp_path: Path) -> None:
    data_yaml = user_copy(synthetic, tmp_path / "user")
    before = snapshot(data_yaml.parent)
    spec = parse_spec(fake_sweep_file(data={"yaml": str(data_yaml)}))
    dataset = open_checked(spec, SweepSettings(home=tmp_path / "home"))
    data = EvalData.from_dataset(dataset)
    evaluate(lambda tensor: np.zeros((1, 8, 21), np.float32), data.val_images, data.names, 32)
    view = training_view(data_yaml, tmp_path / "home" / "cache" / "data-view")
    assert snapshot(data_yaml.parent) == before
    assert view.parent.parent == (tmp_path / "home" / "cache" / "data-view").resolve()
    assert yaml.safe_load(view.read_text())["path"] == str(view.parent)
    assert load_dataset(view).names == dataset.names and len(load_dataset(view).val_images) == 12
    assert all(p.is_symlink() for p in load_dataset(view).val_images)
    assert dataset_fingerprint(view) == dataset_fingerprint(data_yaml)  # a model trained before is reused


@pytest.mark.slow
def test_training_writes_ultralytics_label_caches_in_the_view_not_in_the_users_folder(synthetic: Path,
                                                                                      tmp_path: Path) -> None:
    from yolobench.cache import ArtifactCache
    from yolobench.stages.train import train_model
    from yolobench.stages.ultralytics_env import prepare_ultralytics

    data_yaml = user_copy(synthetic, tmp_path / "user")
    prepare_ultralytics(tmp_path / "home" / "ultralytics")
    cache = ArtifactCache(tmp_path / "home" / "cache")
    view = training_view(data_yaml, cache.root / "data-view")
    label = labelled(data_yaml)
    polygon = [0.1, 0.2, 0.5, 0.1, 0.4, 0.7, 0.2, 0.6]
    label.write_text("2 " + " ".join(map(str, polygon)) + "\n")  # a polygon, as Ultralytics trains on it
    ops = pytest.importorskip("ultralytics.utils.ops")
    image = label.parents[2] / "images" / "val" / label.with_suffix(".jpg").name
    np.testing.assert_allclose(read_labels(image)[:, 1:], ops.segments2boxes([np.reshape(polygon, (-1, 2))]), atol=1e-6)
    before = snapshot(data_yaml.parent)
    trained = train_model(cache, "yolo11n.yaml", view, epochs=1, imgsz=64, batch=4)
    assert trained.path.is_file()
    assert snapshot(data_yaml.parent) == before
    assert sorted(p.name for p in view.parent.rglob("*.cache")) == ["train.cache", "val.cache"]
