"""PDF attachments previewed as PNG pages, so a PDF never reaches the browser.

A PDF from a stranger is parsed by pdfium in a child process with a memory and CPU ceiling and a
timeout: a crafted file that hangs or balloons the parser costs one short-lived process, not a web
worker. Run as ``python -m mailbox.pdfpreview PAGE`` with the PDF on stdin, the child writes the page
count on the first line and then the PNG of PAGE (nothing after the count when PAGE is -1).
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SIZE_MAX_BYTES = 50 * 1024 * 1024  # bigger PDFs only download
PAGES_SHOWN = 30  # a longer PDF shows its first pages and says to download it for the rest
WIDTH_PX = 1100  # a page's width on screen at a typical reading size
HEIGHT_MAX_PX = 4000  # a very tall page (a long receipt) is scaled down to this height
SCALE_MAX = 3.0  # a tiny page is not blown up beyond this
TIMEOUT_SECONDS = 20
CPU_SECONDS = 15
MEMORY_BYTES = 1024 * 1024 * 1024
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class PdfPreviewError(Exception):
    """The PDF cannot be shown (damaged, encrypted, too costly): the user downloads it instead."""


@dataclass(frozen=True)
class PdfPage:
    page_count: int
    png: bytes


def pdf_page_count(data: bytes) -> int:
    return _render_in_child(data, page=-1).page_count


def pdf_page_png(data: bytes, page: int) -> bytes:
    rendered = _render_in_child(data, page=page)
    if not rendered.png:
        raise PdfPreviewError(f"page {page + 1} is past the last page ({rendered.page_count})")
    return rendered.png


def _render_in_child(data: bytes, *, page: int) -> PdfPage:
    try:
        finished = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", "mailbox.pdfpreview", str(page)],
            input=data,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            cwd=PROJECT_ROOT,
            preexec_fn=_limit_child,  # noqa: PLW1509 - only sets rlimits, before exec
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PdfPreviewError("the PDF took too long to render") from exc
    if finished.returncode != 0:
        reason = finished.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["killed"]
        raise PdfPreviewError(f"the PDF could not be rendered: {reason[0][:200]}")
    count, _, png = finished.stdout.partition(b"\n")
    return PdfPage(page_count=int(count), png=png)


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def _render(data: bytes, page: int) -> PdfPage:
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        count = len(document)
        if not 0 <= page < count:
            return PdfPage(page_count=count, png=b"")
        pdf_page = document[page]
        width, height = pdf_page.get_size()
        scale = min(WIDTH_PX / max(width, 1), HEIGHT_MAX_PX / max(height, 1), SCALE_MAX)
        image = pdf_page.render(scale=scale).to_pil()
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False)
        return PdfPage(page_count=count, png=out.getvalue())
    finally:
        document.close()


def _main(argv: list[str]) -> int:
    try:
        rendered = _render(sys.stdin.buffer.read(), int(argv[0]))
    except Exception as exc:  # noqa: BLE001 - the parent only needs the reason, on stderr
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(b"%d\n" % rendered.page_count + rendered.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
