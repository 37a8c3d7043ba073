from __future__ import annotations


def test_progress_eta_leaves_shared_training_out() -> None:
    import io

    from yolobench.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(10, stream=stream, clock=lambda: now[0])
    now[0] = 300.0
    progress.exclude(290.0)  # training the model all variants share
    progress.finish("first", "done")
    assert progress.eta_seconds() == 90.0  # 9 left at 10 s each, not at 300 s
    assert "[ 1/10  10% eta 1m30s] first done" in stream.getvalue()


def test_progress_line_shows_done_total_and_current_variant() -> None:
    import io

    from yolobench.progress import Progress

    stream = io.StringIO()
    progress = Progress(3, already_done=1, stream=stream, clock=lambda: 0.0)
    progress.start("n-fp16-320-all")
    assert stream.getvalue() == "[1/3  33% eta --] n-fp16-320-all ...\n"
