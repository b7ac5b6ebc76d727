"""Run under the system python (/usr/bin/python3, which has LibreOffice's uno module): connect to
a running soffice over its private pipe, load one file with macros never executed, export a PDF.
argv: pipe-name input-path output-path max-pages. Exit 0 on success; a message on stderr otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

import uno  # type: ignore[import-not-found]
from com.sun.star.beans import PropertyValue  # type: ignore[import-not-found]

_EXPORT = [("com.sun.star.text.GenericTextDocument", "writer_pdf_Export"),
           ("com.sun.star.sheet.SpreadsheetDocument", "calc_pdf_Export"),
           ("com.sun.star.presentation.PresentationDocument", "impress_pdf_Export"),
           ("com.sun.star.drawing.DrawingDocument", "draw_pdf_Export")]


def _props(**values: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for name, value in values.items():
        prop = PropertyValue()
        prop.Name, prop.Value = name, value
        out.append(prop)
    return tuple(out)


def _connect(pipe: str, deadline: float) -> Any:
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local)
    while True:
        try:
            return resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    pipe, src, dst, pages, wait = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    ctx = _connect(pipe, time.monotonic() + wait)
    desktop = ctx.ServiceManager.createInstanceWithContext("com.sun.star.frame.Desktop", ctx)
    # MacroExecutionMode 0 = NEVER_EXECUTE; UpdateDocMode 0 = NO_UPDATE (no linked content fetched).
    doc = desktop.loadComponentFromURL(uno.systemPathToFileUrl(src), "_blank", 0, _props(
        Hidden=True, ReadOnly=True, MacroExecutionMode=0, UpdateDocMode=0))
    if doc is None:
        sys.stderr.write("LibreOffice could not open the file\n")
        return 2
    try:
        export = next((f for service, f in _EXPORT if doc.supportsService(service)), None)
        if export is None:
            sys.stderr.write("no PDF export for this document type\n")
            return 2
        filter_data = uno.Any("[]com.sun.star.beans.PropertyValue", _props(
            PageRange=f"1-{pages}", ExportLinksRelativeFsys=False, ExportNotes=False,
            ExportBookmarks=False, ExportFormFields=False, EmbedStandardFonts=False))
        doc.storeToURL(uno.systemPathToFileUrl(dst), _props(FilterName=export, FilterData=filter_data))
    finally:
        doc.close(True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
