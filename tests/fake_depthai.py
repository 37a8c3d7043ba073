"""A recording stand-in for the parts of the `depthai` 3.x module a device pipeline needs, for hosts without an
OAK: the real module refuses to create device nodes (NeuralNetwork, DetectionNetwork) in a pipeline that has no
device. Every setter records what it was given; the device answers each frame with the next canned message.

Its public names are DepthAI's own (classes, methods with their parameter names, properties, enum members with
their values), and test_depthai_bindings.py checks them against the installed depthai 3.x, so code that runs
against this fake uses only API the real module has. What it keeps for the tests is underscored."""

from __future__ import annotations

import enum
import types
from typing import Any


class Output:
    def __init__(self, node: Any, name: str) -> None:
        self._node, self._name = node, name
        self._queue: MessageQueue | None = None

    def createOutputQueue(self, maxSize: int = 16, blocking: bool = False) -> MessageQueue:  # noqa: N802, N803
        self._queue = MessageQueue(maxSize, blocking, self._node._pipeline._answers)
        return self._queue


class Input:
    def __init__(self, node: Any, name: str) -> None:
        self._node, self._name, self._settings = node, name, {}
        self._queue: InputQueue | None = None

    def setBlocking(self, blocking: bool) -> None:  # noqa: N802
        self._settings["blocking"] = blocking

    def setMaxSize(self, maxSize: int) -> None:  # noqa: N802, N803
        self._settings["max_size"] = maxSize

    def createInputQueue(self, maxSize: int = 16, blocking: bool = False) -> InputQueue:  # noqa: N802, N803
        self._queue = InputQueue(maxSize, blocking)
        return self._queue


class InputQueue:
    def __init__(self, max_size: int, blocking: bool) -> None:
        self._max_size, self._blocking, self._sent = max_size, blocking, []

    def send(self, msg: Any) -> None:
        self._sent.append(msg)


class MessageQueue:
    def __init__(self, max_size: int, blocking: bool, answers: list[Any]) -> None:
        self._max_size, self._blocking, self._answers = max_size, blocking, answers

    def get(self) -> Any:
        return self._answers.pop(0)


class _Network:
    """What NeuralNetwork and DetectionNetwork share: each setter's last argument(s), by method name."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline, self._calls = pipeline, {}
        self._input, self._out = Input(self, "input"), Output(self, "out")

    @property
    def input(self) -> Input:
        return self._input

    @property
    def out(self) -> Output:
        return self._out

    def setNNArchive(self, nnArchive: NNArchive, numShaves: int | None = None) -> None:  # noqa: N802, N803
        self._calls["setNNArchive"] = (nnArchive._path,) if numShaves is None else (nnArchive._path, numShaves)

    def setNumInferenceThreads(self, numThreads: int) -> None:  # noqa: N802, N803
        self._calls["setNumInferenceThreads"] = numThreads

    def setNumNCEPerInferenceThread(self, numNCEPerThread: int) -> None:  # noqa: N802, N803
        self._calls["setNumNCEPerInferenceThread"] = numNCEPerThread

    def setNumPoolFrames(self, numFrames: int) -> None:  # noqa: N802, N803
        self._calls["setNumPoolFrames"] = numFrames


class NeuralNetwork(_Network):
    pass


class DetectionParser:
    def __init__(self) -> None:
        self._calls: dict[str, Any] = {}

    def setIouThreshold(self, thresh: float) -> None:  # noqa: N802
        self._calls["setIouThreshold"] = thresh


class DetectionNetwork(_Network):
    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(pipeline)
        self._parser = DetectionParser()

    @property
    def detectionParser(self) -> DetectionParser:  # noqa: N802
        return self._parser

    def setNNArchive(self, archive: NNArchive, numShaves: int | None = None) -> None:  # noqa: N802, N803
        super().setNNArchive(archive, numShaves)

    def setConfidenceThreshold(self, thresh: float) -> None:  # noqa: N802
        self._calls["setConfidenceThreshold"] = thresh


class NNArchive:
    def __init__(self, archivePath: str) -> None:  # noqa: N803
        self._path = str(archivePath)


class Pipeline:
    def __init__(self, defaultDevice: Device) -> None:  # noqa: N803
        self._device, self._nodes, self._started, self._stopped = defaultDevice, [], False, False
        self._answers = defaultDevice._answers

    def create(self, arg0: type) -> Any:
        node = arg0(self)
        self._nodes.append(node)
        return node

    def start(self) -> None:
        self._started = True

    def stop(self) -> None:
        self._stopped = True


class Device:
    _opened: list[Device] = []  # every device opened, for the tests
    _next_answers: list[Any] = []  # the messages the next opened device answers frames with

    def __init__(self, deviceInfo: DeviceInfo | None = None) -> None:  # noqa: N803
        self._info, self._answers = deviceInfo, list(Device._next_answers)
        self._log_levels: list[Any] = []
        self._log_callbacks: list[Any] = []
        self._closed = False
        Device._opened.append(self)

    def setLogLevel(self, level: Any) -> None:  # noqa: N802
        self._log_levels.append(level)

    def setLogOutputLevel(self, level: Any) -> None:  # noqa: N802
        self._log_levels.append(("output", level))

    def addLogCallback(self, callback: Any) -> int:  # noqa: N802
        self._log_callbacks.append(callback)
        return len(self._log_callbacks)

    def getDeviceName(self) -> str:  # noqa: N802
        return "OAK-D-PRO"

    def getDeviceId(self) -> str:  # noqa: N802
        return self._info._id if self._info else "14442C10D13EABCE00"

    def getUsbSpeed(self) -> str:  # noqa: N802
        return "UsbSpeed.SUPER"

    def close(self) -> None:
        self._closed = True


class DeviceInfo:
    def __init__(self, deviceIdOrName: str) -> None:  # noqa: N803
        self._id = deviceIdOrName


class ImgTransformation:
    def __init__(self, width: int, height: int) -> None:
        self._size = (width, height)


class ImgFrame:
    Type = enum.IntEnum("Type", {"BGR888p": 8})

    def __init__(self) -> None:
        self._calls: dict[str, Any] = {}

    def setType(self, type: Any) -> None:  # noqa: N802, A002 (DepthAI's names)
        self._calls["setType"] = type

    def setWidth(self, width: int) -> None:  # noqa: N802
        self._calls["setWidth"] = width

    def setHeight(self, height: int) -> None:  # noqa: N802
        self._calls["setHeight"] = height

    def setData(self, arg0: Any) -> None:  # noqa: N802
        self._calls["setData"] = arg0

    def setTransformation(self, transformation: ImgTransformation) -> None:  # noqa: N802
        self._calls["setTransformation"] = transformation._size

    def setSequenceNum(self, sequenceNum: int) -> None:  # noqa: N802, N803
        self._calls["setSequenceNum"] = sequenceNum

    def setTimestamp(self, timestamp: Any) -> None:  # noqa: N802
        self._calls["setTimestamp"] = timestamp


class NNData:
    """A host-decoding result: tensors by name, given as the device would send them."""

    def __init__(self) -> None:
        self._tensors: dict[str, Any] = {}

    def getTensor(self, name: str, storageOrder: Any) -> Any:  # noqa: N802, N803
        return self._tensors[name]


class ImgDetections:
    def __init__(self) -> None:
        self._detections: list[Any] = []

    @property
    def detections(self) -> list[Any]:
        return self._detections


def now() -> str:
    return "t0"


def make_fake_depthai() -> types.SimpleNamespace:
    """A fresh fake `depthai` module (no devices opened yet)."""
    Device._opened, Device._next_answers = [], []
    return types.SimpleNamespace(
        __version__="3.12.0", Pipeline=Pipeline, NNArchive=NNArchive, Device=Device, DeviceInfo=DeviceInfo,
        ImgFrame=ImgFrame, ImgTransformation=ImgTransformation, NNData=NNData, ImgDetections=ImgDetections,
        Clock=types.SimpleNamespace(now=now),
        LogLevel=enum.IntEnum("LogLevel", {"TRACE": 0, "WARN": 3}),
        TensorInfo=types.SimpleNamespace(StorageOrder=enum.IntEnum("StorageOrder", {"NCHW": 17185})),
        node=types.SimpleNamespace(NeuralNetwork=NeuralNetwork, DetectionNetwork=DetectionNetwork,
                                   DetectionParser=DetectionParser),
        Node=types.SimpleNamespace(Input=Input, Output=Output),
        InputQueue=InputQueue, MessageQueue=MessageQueue,
    )


# Where each fake class or enum stands in the real module, for the surface check.
REAL_NAMES = {
    "Pipeline": "Pipeline", "NNArchive": "NNArchive", "Device": "Device", "DeviceInfo": "DeviceInfo",
    "ImgFrame": "ImgFrame", "ImgTransformation": "ImgTransformation", "NNData": "NNData",
    "ImgDetections": "ImgDetections", "Clock": "Clock", "LogLevel": "LogLevel", "TensorInfo": "TensorInfo",
    "node.NeuralNetwork": "node.NeuralNetwork", "node.DetectionNetwork": "node.DetectionNetwork",
    "node.DetectionParser": "node.DetectionParser", "Node.Input": "Node.Input", "Node.Output": "Node.Output",
    "InputQueue": "InputQueue", "MessageQueue": "MessageQueue",
}
