"""The review page: a small local FastAPI app over the review store (``vitrina review serve``).

It lists a catalogue's images (filter by status, 48 a page) with picture, mask overlay and
status; the approve / reject / bad buttons POST to ``/api/images/{id}/status``, which
writes the status and a review event (source ``web``) and answers the new status.
Nothing but ids travel in URLs: files are looked up by image id in the database, so no
path from a request ever reaches the file system, and every value shown is escaped by
Jinja2's autoescape.
"""

from __future__ import annotations

import io
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image
from pydantic import BaseModel

from vitrina.models.segmentation import decode_rle, overlay
from vitrina.store import STATUSES, ReviewStore

PAGE_SIZE = 48
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
)


class StatusBody(BaseModel):
    """``POST /api/images/{id}/status`` body."""

    status: str


def create_app(
    store: ReviewStore, catalogue: str, reviewer: str, root: str | Path | None = None
) -> FastAPI:
    """The review app for one catalogue; status changes are recorded as ``reviewer``.

    Relative image paths in the store are taken relative to ``root`` (the project
    directory, where ``kedro run`` wrote them; default: the working directory).
    """
    app = FastAPI(title=f"Vitrina review: {catalogue}", docs_url=None, redoc_url=None)
    base = Path(root) if root is not None else Path.cwd()

    def _file(row: dict) -> Path:
        path = row["processed_path"]
        if not path or not (base / path).is_file():
            raise HTTPException(404, f"the file of image {row['image_id']} is missing")
        return base / path

    def _image(image_id: int) -> dict:
        row = store.image(image_id)
        if row is None or row["catalogue"] != catalogue:
            raise HTTPException(404, f"no image {image_id} in catalogue {catalogue}")
        return row

    @app.get("/", response_class=HTMLResponse)
    def page(status: str = "all", page: int = 1) -> str:
        if status != "all" and status not in STATUSES:
            raise HTTPException(400, f"status must be all or one of {', '.join(STATUSES)}")
        images = store.images(catalogue, None if status == "all" else status)
        counts = store.images(catalogue)["status"].value_counts().to_dict()
        pages = max(1, -(-len(images) // PAGE_SIZE))
        page = min(max(1, page), pages)
        shown = images.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return _TEMPLATES.get_template("review.html").render(
            catalogue=catalogue,
            reviewer=reviewer,
            images=shown.to_dict("records"),
            status=status,
            statuses=STATUSES,
            counts=counts,
            total=int(sum(counts.values())),
            page=page,
            pages=pages,
        )

    @app.get("/images/{image_id}/picture")
    def picture(image_id: int) -> FileResponse:
        return FileResponse(_file(_image(image_id)))

    @app.get("/images/{image_id}/overlay")
    def mask_overlay(image_id: int) -> Response:
        row = _image(image_id)
        mask = store.image_mask(image_id)
        if mask is None:
            raise HTTPException(404, f"image {image_id} has no mask")
        with Image.open(_file(row)) as img:
            out = overlay(img, decode_rle(mask["rle"]))
        buffer = io.BytesIO()
        out.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.post("/api/images/{image_id}/status")
    def set_status(image_id: int, body: StatusBody) -> dict:
        _image(image_id)
        if body.status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        change = store.set_image_status(image_id, body.status, reviewer, source="web")
        return {"image_id": image_id, "status": body.status, "changed": change.changed}

    return app


def serve(store: ReviewStore, catalogue: str, reviewer: str, root: Path, port: int = 8765) -> None:
    """Serve the review page on http://127.0.0.1:``port`` until interrupted."""
    import uvicorn

    app = create_app(store, catalogue, reviewer, root)
    uvicorn.run(app, host="127.0.0.1", port=int(port))
