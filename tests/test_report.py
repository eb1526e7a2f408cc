"""The HTML report: written atomically, parses, escapes text, embeds images byte for byte."""

from __future__ import annotations

import base64
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from monosemantic.config import ConfigError
from monosemantic.evaluation.metrics import density_histogram
from monosemantic.interpret.report import ReportSection, format_value, write_report


class Collector(HTMLParser):
    """Start tags, text content and image sources of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_title = tag == "title"
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data


def parse(path: Path) -> Collector:
    collector = Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    return collector


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "density.png"
    density_histogram(torch.tensor([-1.0, -2.0, -10.0]), path, bins=3)
    return path


def test_report_round_trip(tmp_path, png) -> None:
    sections = [
        ReportSection("Reconstruction", table={"fvu": 0.123456, "l0": 32, "name": "a & b"}),
        ReportSection(
            "Runs",
            table=[{"width": 1024, "fvu": 0.2}, {"width": 4096, "mse": 1.5e-6}],
            images=[png],
            text="first <script>alert(1)</script> paragraph\n\nsecond paragraph",
        ),
    ]
    out = write_report(tmp_path / "out" / "report.html", title="SAE <eval> & co", sections=sections)
    assert out == tmp_path / "out" / "report.html"
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind
    doc = parse(out)
    assert doc.title == "SAE <eval> & co"
    assert "script" not in doc.tags  # the text was escaped, not run
    text = "".join(doc.text)
    assert "first <script>alert(1)</script> paragraph" in text
    assert "second paragraph" in text
    for cell in ("0.1235", "32", "a & b", "1,024", "4,096", "1.500e-06", "width", "mse"):
        assert cell in text, cell
    assert doc.tags.count("p") == 2
    assert doc.tags.count("section") == 2
    assert "&lt;script&gt;" in out.read_text()
    (src,) = doc.images
    header, data = src.split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(data) == png.read_bytes()


def test_format_value() -> None:
    assert format_value(16384) == "16,384"
    assert format_value(np.int64(7)) == "7"
    assert format_value(0.5) == "0.5"
    assert format_value(2 / 3) == "0.6667"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(-2.5e-5) == "-2.500e-05"
    assert format_value(0.0) == "0.0"
    assert format_value(math.nan) == "nan"
    assert format_value(True) == "True"
    assert format_value(torch.tensor(0.25)) == "0.25"
    assert format_value(torch.zeros(3, 4)) == "Tensor of shape [3, 4]"
    assert format_value("text") == "text"


def test_missing_and_unknown_images(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(
            tmp_path / "r.html",
            title="t",
            sections=[ReportSection("s", images=[tmp_path / "none.png"])],
        )
    bad = tmp_path / "plot.pdf"
    bad.write_bytes(b"%PDF")
    with pytest.raises(ValueError, match="save the figure as PNG"):
        write_report(tmp_path / "r.html", title="t", sections=[ReportSection("s", images=[bad])])
    assert not (tmp_path / "r.html").exists()


def test_empty_titles_rejected(tmp_path) -> None:
    with pytest.raises(ConfigError, match="title"):
        ReportSection("  ")
    with pytest.raises(ConfigError, match="report title"):
        write_report(tmp_path / "r.html", title="", sections=[])
