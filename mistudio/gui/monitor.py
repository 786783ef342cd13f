"""System monitor: CPU, RAM and GPU over time, sampled by a timer of the UI thread (each reading
is a non-blocking call of well under a millisecond; Jetson's tegrastats is read as its lines
arrive, through a QProcess).

GPUs are read through NVML (nvidia-ml-py). Jetson boards have no NVML: their GPU load comes from
``tegrastats`` (GR3D_FREQ), and their memory is the system RAM (unified). Where neither exists,
the monitor shows CPU and RAM and says that no GPU reading is available.
"""

from __future__ import annotations

import re
import shutil
from collections import deque
from typing import Any

import numpy as np
import psutil
import pyqtgraph as pg
from PySide6.QtCore import QProcess, QTimer
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

HISTORY = 120
"""Samples kept (two minutes at one a second)."""


class GpuReader:
    """Utilisation and memory of GPU 0 from NVML or tegrastats; ``source`` says which."""

    def __init__(self) -> None:
        self.source = "none"
        self._handle: Any = None
        self._tegra: QProcess | None = None
        self._tegra_last: tuple[float, float] | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > 0:
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                self.source = "nvml"
                return
        except Exception:  # no driver, no library, no GPU: all mean "no NVML"
            pass
        if shutil.which("tegrastats"):
            self._tegra = QProcess()
            self._tegra.readyReadStandardOutput.connect(self._read_tegra)
            self._tegra.start("tegrastats", ["--interval", "1000"])
            self.source = "tegrastats"

    def _read_tegra(self) -> None:
        assert self._tegra is not None
        text = bytes(self._tegra.readAllStandardOutput().data()).decode(errors="replace")
        for line in text.splitlines():
            gpu = re.search(r"GR3D_FREQ (\d+)%", line)
            ram = re.search(r"RAM (\d+)/(\d+)MB", line)
            if gpu and ram:
                self._tegra_last = (float(gpu.group(1)),
                                    100.0 * int(ram.group(1)) / max(int(ram.group(2)), 1))

    def read(self) -> tuple[float, float] | None:
        """(utilisation %, memory used %) or None."""
        if self.source == "nvml":
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            return float(util.gpu), 100.0 * mem.used / max(mem.total, 1)
        if self.source == "tegrastats":
            return self._tegra_last
        return None

    def close(self) -> None:
        if self._tegra is not None:
            self._tegra.kill()
            self._tegra.waitForFinished(1000)


class Sampler:
    """One reading per call into ring buffers (the monitor's timer calls it once a second)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.gpu = GpuReader()
        self.cpu: deque[float] = deque(maxlen=HISTORY)
        self.ram: deque[float] = deque(maxlen=HISTORY)
        self.gpu_util: deque[float] = deque(maxlen=HISTORY)
        self.gpu_mem: deque[float] = deque(maxlen=HISTORY)
        psutil.cpu_percent(None)  # prime: the first reading is always 0

    def sample(self) -> None:
        self.cpu.append(psutil.cpu_percent(None))
        self.ram.append(psutil.virtual_memory().percent)
        gpu = self.gpu.read()
        if gpu is not None:
            self.gpu_util.append(gpu[0])
            self.gpu_mem.append(gpu[1])

    def snapshot(self) -> dict[str, np.ndarray]:
        return {k: np.array(getattr(self, k), dtype=float)
                for k in ("cpu", "ram", "gpu_util", "gpu_mem")}

    def stop(self) -> None:
        self.gpu.close()


class SystemMonitor(QWidget):
    """Rolling curves of CPU, RAM and (if readable) GPU utilisation and memory, in percent."""

    def __init__(self, parent: QWidget | None = None, interval: float = 1.0) -> None:
        super().__init__(parent)
        self.sampler = Sampler(interval)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        source = {"nvml": "GPU: NVML", "tegrastats": "GPU: tegrastats (Jetson; memory is "
                  "shared with the CPU)", "none": "No GPU reading on this machine: CPU and RAM "
                  "only."}[self.sampler.gpu.source]
        series = (("cpu", "CPU", "#e06c75"), ("ram", "RAM", "#61afef"),
                  ("gpu_util", "GPU", "#98c379"), ("gpu_mem", "GPU memory", "#e5c07b"))
        # the legend is a line of text above the plot: drawn inside, it covered the curves
        legend = "&nbsp;&nbsp;".join(f'<span style="color:{c}">&#9632;</span> {label}'
                                     for _, label, c in series)
        # one line (the dock is short): the curves, the time axis's unit, where GPU data comes
        self.info = QLabel(f"{legend}&nbsp;&nbsp;(x: seconds, 0 = now)&nbsp;&nbsp;{source}")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self.plot = pg.PlotWidget()
        self.plot.setYRange(0, 100)
        self.plot.getAxis("left").setTicks([[(0, "0"), (50, "50"), (100, "100")]])
        self.plot.setLabel("left", "%")
        self.plot.setMouseEnabled(x=False, y=False)
        self.curves = {k: self.plot.plot(name=label, pen=pg.mkPen(color, width=2))
                       for k, label, color in series}
        layout.addWidget(self.plot)
        self.timer = QTimer(self)
        self.timer.setInterval(int(interval * 1000))
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    def refresh(self) -> None:
        self.sampler.sample()
        for key, values in self.sampler.snapshot().items():
            x = np.arange(-len(values) + 1, 1, dtype=float) * self.sampler.interval
            self.curves[key].setData(x, values)

    def shutdown(self) -> None:
        self.timer.stop()
        self.sampler.stop()
