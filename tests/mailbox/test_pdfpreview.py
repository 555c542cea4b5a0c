"""The PDF renderer: pages as PNGs from a child process that a hostile PDF cannot take down the server with."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mailbox import pdfpreview
from mailbox.pdfpreview import PdfPreviewError, pdf_page_count, pdf_page_png
from tests.fixtures.ui import pdf_bytes


def test_each_page_renders_at_reading_width():
    document = pdf_bytes("red", "blue", "green")
    assert pdf_page_count(document) == 3
    image = Image.open(io.BytesIO(pdf_page_png(document, 2))).convert("RGB")
    assert image.width == pdfpreview.WIDTH_PX
    assert image.height == pytest.approx(pdfpreview.WIDTH_PX * 842 / 595, abs=2)
    red, green, blue = image.getpixel((10, 10))
    assert green > 120 and red < 8 and blue < 8  # green (the PDF stores pages as JPEG: not exactly 128)


def test_a_page_past_the_end_is_an_error():
    with pytest.raises(PdfPreviewError, match="past the last page"):
        pdf_page_png(pdf_bytes("red"), 1)


def test_a_very_tall_page_is_scaled_down_to_the_height_limit():
    tall = Image.new("RGB", (600, 20000), "white")
    out = io.BytesIO()
    tall.save(out, format="PDF")
    image = Image.open(io.BytesIO(pdf_page_png(out.getvalue(), 0)))
    assert image.height == pytest.approx(pdfpreview.HEIGHT_MAX_PX, abs=2) and image.width < 200


@pytest.mark.parametrize("content", [b"", b"%PDF-1.7 garbage", b"<html>not a pdf</html>"])
def test_what_is_not_a_pdf_is_a_clear_error(content):
    with pytest.raises(PdfPreviewError, match="could not be rendered"):
        pdf_page_count(content)


def test_the_child_runs_under_a_memory_ceiling(monkeypatch):
    monkeypatch.setattr(pdfpreview, "MEMORY_BYTES", 16 * 1024 * 1024)  # too little for Python to start
    with pytest.raises(PdfPreviewError):
        pdf_page_count(pdf_bytes("red"))


def test_a_render_that_takes_too_long_is_abandoned(monkeypatch):
    monkeypatch.setattr(pdfpreview, "TIMEOUT_SECONDS", 0.01)
    with pytest.raises(PdfPreviewError, match="too long"):
        pdf_page_png(pdf_bytes("red"), 0)
