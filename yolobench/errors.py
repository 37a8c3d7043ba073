"""One exception hierarchy, so the sweep loop can tell three things apart by base class alone:
an error that stops the whole sweep (nothing any variant does can help), a variant that cannot be
built or run (recorded as a FAILED run; the sweep goes on), and a bug (anything else in BUGS; raised)."""

from __future__ import annotations


class YolobenchError(Exception):
    """Base of every error yolobench raises on purpose; its message is meant for the user as it is."""


class SweepStopped(YolobenchError):
    """The sweep cannot go on: data, weights or models missing, a stored study that does not fit.
    The variant in flight is left to be redone; the sweep exits non-zero with this message."""


class DataUnavailable(SweepStopped):
    """The sweep's data set is not on disk and cannot be fetched or made."""


class DataInvalid(SweepStopped):
    """The sweep's data set is on disk but broken (a label line, an image, the data yaml): no variant can be
    scored on it, so the sweep stops before anything is built, with one message naming the file and the line."""


class VariantFailed(YolobenchError):
    """A variant that could not be built or run; recorded as a FAILED run, the sweep goes on."""


class ModelMismatch(VariantFailed):
    """A model that is not what yolobench expects of it (shapes, inputs, classes): that variant fails."""


class RuntimeUnavailable(VariantFailed):
    """The runtime (or the provider a variant asks for) cannot run on this host."""


# Exceptions that mean the code is wrong rather than the variant: these stop the sweep with a traceback.
# yolobench's own errors are never among them, whatever else they derive from.
BUGS: tuple[type[BaseException], ...] = (
    TypeError, AttributeError, NameError, KeyError, IndexError, AssertionError, ValueError,
)


def is_bug(error: BaseException) -> bool:
    return isinstance(error, BUGS) and not isinstance(error, YolobenchError)
