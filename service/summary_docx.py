"""The drafted year-end summary as a Word document (python-docx): what staff open, edit and submit.

Numbers carry a superscript note mark ([n]); the notes at the end name the figure behind each
(its key, label and value), so an inspector reading the submitted document can trace any number
back to the figures. Word's own footnotes are not used: python-docx cannot write them, and a
table survives editing and printing as well.
"""

from __future__ import annotations

import io

from docx import Document
from docx.oxml.ns import qn
from docx.shared import Pt

from projections.summary import Draft, Num

FONT = "宋体"  # SimSun: the face Chinese government and school documents are set in


def to_docx(d: Draft) -> bytes:
    doc = Document()
    normal = doc.styles["Normal"]
    normal.font.name = FONT
    normal.font.size = Pt(12)
    normal.element.get_or_add_rPr().get_or_add_rFonts().set(qn("w:eastAsia"), FONT)
    doc.core_properties.title = d.title
    doc.add_heading(d.title, level=0)
    preface = doc.add_paragraph().add_run(d.preface)
    preface.italic = True
    for section in d.sections:
        doc.add_heading(section.title, level=1)
        for p in section.paragraphs:
            para = doc.add_paragraph()
            for part in p.parts:
                if isinstance(part, Num):
                    para.add_run(part.text)
                    mark = para.add_run(f"[{part.note}]")
                    mark.font.superscript = True
                else:
                    para.add_run(part)
        if section.to_write:
            for _ in range(3):
                doc.add_paragraph()
    doc.add_heading("数字来源（供审核）" if d.lang != "en" else "Where each number comes from", level=1)
    head = ("注", "指标代码", "指标", "数值") if d.lang != "en" else ("note", "figure key", "figure", "value")
    table = doc.add_table(rows=1, cols=4)
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, head, strict=True):
        cell.text = text
    for note in d.notes:
        row = table.add_row().cells
        row[0].text, row[1].text, row[2].text, row[3].text = str(note.note), note.key, note.label, str(note.value)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()
