"""yolobench: build every optimised variant of a YOLO11 detector, measure it on the target
runtime the same way every time, and log each variant as one MLflow run.

    import yolobench
    summary = yolobench.sweep("quickstart", only={"imgsz": [256]})
    frame = yolobench.results("quickstart", only={"imgsz": [256]})
"""

__version__ = "0.1.0"


def sweep(target, **options):
    """Run or resume a sweep (a target's name or a sweep file); see yolobench.api.sweep."""
    from yolobench.api import sweep as run

    return run(target, **options)


def results(target, **options):
    """A sweep's rows as a pandas DataFrame; see yolobench.api.results."""
    from yolobench.api import results as read

    return read(target, **options)
