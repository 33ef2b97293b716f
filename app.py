"""Gradio demo: is a face in this photo or clip manipulated, where, and how?

    python app.py [--model SPEC] [--host 0.0.0.0] [--port 7860] [--share]

The model comes from --model, else the MTL_MODEL environment variable, else the shipped checkpoint; a SPEC is a local
checkpoint folder or a Hugging Face Hub id ``owner/name[@rev]``. Everything the UI shows comes from ``mtl.pipeline``;
this file only lays it out. Named API endpoints: ``/analyze_image`` and ``/analyze_video`` (see docs/app.md).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np

from mtl.constants import FAMILIES
from mtl.pipeline import InputError, analyze_image, analyze_video, get_model, load_image, MAX_PIXELS
from mtl.video import VideoWriter, probe

MAX_VIDEO_SECONDS = float(os.environ.get("MTL_MAX_VIDEO_SECONDS", "120"))
MAX_FILE_SIZE = os.environ.get("MTL_MAX_FILE_SIZE", "200mb")
DISPLAY_SIDE = 1600  # the annotated photo is shown at most this large (the analysis runs at full size)
WORK_DIR = Path(tempfile.mkdtemp(prefix="mtl-app-"))  # examples and annotated clips; removed at exit
atexit.register(shutil.rmtree, WORK_DIR, ignore_errors=True)


# --- handlers ------------------------------------------------------------------------------------------------------
def _define_upload_image():
    """gr.Image whose unreadable uploads (a text file named .jpg, an empty, truncated or gigantic file) get the
    pipeline's clear message instead of "Could not preprocess input component". A subclass, so that the copies
    Gradio keeps per session (after an example fills the input, say) behave the same; Gradio writes a .pyi stub
    beside the file that defines a component subclass, a development aid this app does not want, so it is switched
    off while the class is made."""
    import gradio.component_meta as component_meta

    write_stub = component_meta.create_or_modify_pyi
    component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        class UploadImage(gr.Image):
            def get_block_name(self) -> str:
                return "image"  # the stock frontend

            def preprocess(self, payload):
                try:
                    return super().preprocess(payload)
                except Exception as e:
                    try:
                        load_image(getattr(payload, "path", None))
                    except InputError as ie:
                        raise gr.Error(str(ie), title="Cannot read this image", print_exception=False) from e
                    raise gr.Error(f"Cannot read this image ({type(e).__name__}: {e})",
                                   title="Cannot read this image", print_exception=False) from e
    finally:
        component_meta.create_or_modify_pyi = write_stub
    return UploadImage


UploadImage = _define_upload_image()


def _shrink(rgb: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return rgb
    import cv2

    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _method_text(method) -> str:
    if method is None:
        return ""
    return f"\n\n**Looks like:** {method.describe()}"


def run_image(image):
    """Analyse one photo: annotated image, verdict, method guess, faces gallery, details."""
    if image is None:
        raise gr.Error("Please upload, paste or take a photo first.")
    try:
        r = analyze_image(image)
    except InputError as e:
        raise gr.Error(str(e), title="Cannot analyse this image", print_exception=False)
    if r.verdict == "no_face":
        text = "### No face found\nThe detector found no face in this image, so there is nothing to judge."
        if r.notes:
            text += "\n\n" + "; ".join(r.notes).capitalize() + "."
    else:
        text = f"### {r.summary.capitalize()}"
        text += f"\n\n{len(r.faces)} face{'s' if len(r.faces) != 1 else ''} found. p is the model's calibrated " \
                f"probability that a face is manipulated; it says *manipulated* above {r.threshold:.2f}."
        text += _method_text(r.method)
    _clean_work_dir()
    gallery = []
    for i, f in enumerate(r.faces, 1):
        gallery.append((_jpeg(f.crop, "face-"), f"face {i}: {f.label}"))
        gallery.append((_jpeg(f.crop_overlay(), "face-"), f"face {i}: highlighted region" if f.is_fake else
                        f"face {i}: no region (judged real)"))
    method = r.method.display_probs() if r.method is not None else None
    return _jpeg(_shrink(r.annotated()), "annotated-"), text, method, gallery, r.to_dict()


def _jpeg(rgb: np.ndarray, prefix: str) -> str:
    """An output image as a JPEG (quality 95) in the work folder, for Gradio to serve as it is: handed an array,
    Gradio encodes a PNG itself, which for a 1280x720 annotated photo took 200 ms, four times the whole analysis
    (and 30 ms for four faces' gallery), where OpenCV's JPEG takes 3 ms (``bench/bench_served.py`` times the round
    trip)."""
    import cv2

    fd, path = tempfile.mkstemp(suffix=".jpg", prefix=prefix, dir=WORK_DIR)
    os.close(fd)
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise gr.Error("Could not write the result images (is the disk full?)", print_exception=False)
    return path


def clearing(outputs: list) -> dict:
    """Event arguments that empty ``outputs`` at once (chained before each analysis with ``.then``)."""
    return dict(fn=lambda: (None,) * len(outputs), inputs=None, outputs=outputs, queue=False,
                api_visibility="private")


def _clean_work_dir(max_age_s: float = 3600) -> None:
    now = time.time()
    for p in WORK_DIR.glob("*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                p.unlink()
        except OSError:
            pass


def run_video(video, every=1, progress=gr.Progress()):
    """Analyse one clip: annotated clip, p_fake over time, verdict, method guess, details."""
    if video is None:
        raise gr.Error("Please upload a video first.")
    _clean_work_dir()
    try:
        info = probe(video)
        if info.duration > MAX_VIDEO_SECONDS:
            raise InputError(f"the video is {info.duration:.0f} s long; this demo analyses clips of up to "
                             f"{MAX_VIDEO_SECONDS:.0f} s. Please trim it (or run `mtl scan` locally)")
        fd, out = tempfile.mkstemp(suffix=".mp4", prefix="annotated-", dir=WORK_DIR)
        os.close(fd)  # the writer opens it by name
        out = Path(out)
        progress(0.0, desc="analysing frames")
        v = analyze_video(video, every=max(1, int(every or 1)), out_path=out, max_duration=MAX_VIDEO_SECONDS,
                          progress=lambda f, d: progress(f, desc=d))
    except InputError as e:
        raise gr.Error(str(e), title="Cannot analyse this video", print_exception=False)
    import pandas as pd

    rows = [(f.t, f.p_fake) for f in v.frames if f.p_fake is not None]
    plot = pd.DataFrame(rows, columns=["time (s)", "p_fake"])
    if v.verdict == "no_face":
        text = f"### No face found\nNone of the {len(v.frames)} analysed frames had a face the detector could find."
    else:
        text = f"### {v.summary.capitalize()}"
        text += f"\n\nThe video's p is the mean of the per-frame probabilities (as in the paper); it says " \
                f"*manipulated* above {v.threshold:.2f}. {len(v.tracks)} face track(s)."
        text += _method_text(v.method)
    if v.notes:
        text += "\n\nNote: " + "; ".join(v.notes) + "."
    method = v.method.display_probs() if v.method is not None else None
    return str(out), plot, text, method, v.to_dict()


# --- examples made at start-up -------------------------------------------------------------------------------------
def build_examples(folder: Path) -> tuple[list[str], list[str]]:
    """The astronaut photograph shipped with scikit-image, forged versions of it, and a short clip made from it."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    real = skimage.data.astronaut()
    images = [folder / "astronaut.png"]
    Image.fromarray(real).save(images[0])
    forged = {}
    try:
        from mtl.forge import forge

        for i, family in enumerate(FAMILIES):
            f = forge(real, family, np.random.default_rng(100 + i))
            forged[family] = f.image
            p = folder / f"astronaut_{family}.png"
            Image.fromarray(f.image).save(p)
            images.append(p)
    except Exception as e:  # the demo still works without forged examples
        print(f"[app] forged examples unavailable: {type(e).__name__}: {e}")
    clip = folder / "astronaut_clip.mp4"
    try:
        write_example_clip(real, forged.get("deepfake"), clip)
        videos = [str(clip)]
    except Exception as e:
        print(f"[app] example clip unavailable: {type(e).__name__}: {e}")
        videos = []
    return [str(p) for p in images], videos


def write_example_clip(real: np.ndarray, fake: np.ndarray | None, path: Path, seconds: float = 3.0,
                       fps: int = 25, side: int = 320) -> None:
    """A slow pan over the photo: the real face first, then (when given) the forged one."""
    n = int(seconds * fps)
    h, w = real.shape[:2]
    with VideoWriter(path, side, side, fps) as vw:
        for i in range(n):
            src = fake if (fake is not None and i >= n // 2) else real
            x = int(round(60 + 40 * np.sin(i / n * 2 * np.pi)))
            y = int(round(10 + 20 * i / n))
            vw.write(np.ascontiguousarray(src[y:y + side, x:x + side]), i / fps)


EXAMPLE_IMAGES, EXAMPLE_VIDEOS = build_examples(WORK_DIR / "examples")


def about_text() -> str:
    try:
        m = get_model()
        cfg = m.config
        name, thr = m.name, float(m.threshold)
        desc = cfg.get("description") or ""
        head = "yes: the method guess comes from it" if cfg.get("method_head") else \
            "no: the method guess is inferred from the shape of the highlighted region"
        params = f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f} M parameters"
        members = getattr(m, "members", None)
        if members is None:
            size = f"one small network ({params}; its encoder `{m.encoder_name}`) looks at a 256x256 crop of each face:"
        else:
            size = (f"an ensemble of {len(members)} small networks trained apart ({params} in all; encoders "
                    f"`{m.encoder_name}`) each look at a 256x256 crop of each face, and their evidence is "
                    "averaged. In each,")
    except Exception as e:  # About must render even if the model cannot be loaded yet
        name, thr, desc, head, size = (f"(not loaded: {e})", 0.5, "", "unknown",
                                       "one small network looks at a 256x256 crop of each face:")
    return f"""
## What this is

A reimplementation of **ClassNSeg**, "Multi-task Learning for Detecting and Segmenting Manipulated Facial Images and
Videos" (Nguyen, Fang, Yamagishi and Echizen, BTAS 2019). Here {size} an encoder splits its latent code
into a *fake* half and a *real* half; the stronger half gives the verdict, and a decoder turns the winning half
into a per-pixel map of manipulated pixels. Faces are found with MediaPipe and cropped at 1.3x the face box, as in
the paper.

**Model:** `{name}`. {desc}

**Method head:** {head}.

## What the probability means

`p` is the model's probability that a face is manipulated, **calibrated on the validation split** of its training
data (the paper's raw score, a softmax of the two half activations, only spans about 0.27 to 0.73, so it is rescaled).
A face is called *likely manipulated* when p is above the model's threshold, **{thr:.2f}**, taken from the model's
configuration. For a photo the verdict is that of its most suspicious face; for a video, as in the paper, it is the
mean of the per-frame probabilities (frames without a face are left out and counted). The highlighted region is only
drawn for faces judged manipulated: the network decodes the winning half, so a face judged real gets an empty map by
design.

## What it was trained on, and its limits

The shipped model was trained on real face photographs (news photos and studio portraits) and synthetic forgeries
made from them by this project's forge (autoencoder-style swaps, reenactment warps, graphics swaps, self-blends), not
on FaceForensics++ itself. Treat its output as a hint, not proof: it has not seen every manipulation method,
heavy compression, tiny or profile faces, and filters can fool it in both directions. The method guess is a rough
hint, and says where it came from. Uploads are limited to {MAX_FILE_SIZE}, images to {MAX_PIXELS / 1e6:.0f}
megapixels and videos to {MAX_VIDEO_SECONDS:.0f} s.
"""


# --- layout --------------------------------------------------------------------------------------------------------
with gr.Blocks(title="Manipulated face detector (ClassNSeg)", delete_cache=(3600, 3600)) as demo:
    gr.Markdown("# Manipulated face detector\nDrop a photo or a clip: each face is judged real or manipulated, and "
                "the regions the model thinks were changed are highlighted. Based on ClassNSeg (BTAS 2019).")
    with gr.Tab("Image"):
        # Outputs are created first (unrendered) so that clicking an example can analyse it at once.
        image_out = gr.Image(label="Highlighted regions and faces", type="filepath", format="jpeg", interactive=False,
                             elem_id="image-output", render=False)
        image_verdict = gr.Markdown(elem_id="image-verdict", render=False)
        image_method = gr.Label(label="Method guess (faces judged manipulated only)", num_top_classes=4,
                                render=False)
        image_faces = gr.Gallery(label="Faces: what the model saw, and the region it highlighted", columns=6,
                                 height=300, object_fit="contain", fit_columns=False, render=False)
        image_details = gr.JSON(label="Details", render=False)
        image_outputs = [image_out, image_verdict, image_method, image_faces, image_details]
        with gr.Row():
            with gr.Column():
                image_in = UploadImage(label="Photo", type="filepath", image_mode=None,
                                       sources=["upload", "clipboard", "webcam"], elem_id="image-input")
                image_btn = gr.Button("Analyse photo", variant="primary", elem_id="image-button")
                gr.Examples(EXAMPLE_IMAGES, inputs=[image_in], outputs=image_outputs, fn=run_image,
                            run_on_click=True, cache_examples=False, api_visibility="private",
                            label="Examples: the astronaut photo (real) and manipulated versions of it")
            with gr.Column():
                image_out.render()
                image_verdict.render()
                image_method.render()
        image_faces.render()
        with gr.Accordion("Details", open=False):
            image_details.render()
    with gr.Tab("Video"):
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Clip", sources=["upload"], include_audio=True, elem_id="video-input")
                every_in = gr.Slider(1, 10, value=1, step=1, label="Analyse every k-th frame (1 = every frame)")
                video_btn = gr.Button("Analyse clip", variant="primary", elem_id="video-button")
                if EXAMPLE_VIDEOS:
                    gr.Examples([[v] for v in EXAMPLE_VIDEOS], inputs=[video_in],
                                label="Example: a clip made from the astronaut photo (real, then manipulated)")
            with gr.Column():
                video_out = gr.Video(label="Annotated clip", interactive=False, elem_id="video-output")
                video_verdict = gr.Markdown(elem_id="video-verdict")
        video_plot = gr.LinePlot(x="time (s)", y="p_fake", y_lim=[0, 1], title="Probability of manipulation per frame",
                                 label="p_fake over time")
        video_method = gr.Label(label="Method guess (manipulated videos only)", num_top_classes=4)
        with gr.Accordion("Details", open=False):
            video_details = gr.JSON(label="Details")
    with gr.Tab("About"):
        about = gr.Markdown()

    # Each run first clears the previous result, so that an input that is then refused (not an image, a truncated
    # clip) leaves an empty panel beside its error message, never the last photo's verdict.
    video_outputs = [video_out, video_plot, video_verdict, video_method, video_details]
    image_btn.click(**clearing(image_outputs)).then(run_image, inputs=[image_in], outputs=image_outputs,
                                                    api_name="analyze_image", concurrency_limit=2)
    image_in.upload(**clearing(image_outputs)).then(run_image, inputs=[image_in], outputs=image_outputs,
                                                    api_visibility="private", concurrency_limit=2)
    video_btn.click(**clearing(video_outputs)).then(run_video, inputs=[video_in, every_in], outputs=video_outputs,
                                                    api_name="analyze_video", concurrency_limit=1)
    demo.load(about_text, None, about, api_visibility="private")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Manipulated face detector (Gradio demo)")
    ap.add_argument("--model", default=None, help="checkpoint folder or Hub id owner/name[@rev] (default: $MTL_MODEL, "
                                                  "else the shipped checkpoint)")
    ap.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    ap.add_argument("--port", type=int, default=None, help="port (default 7860 or $GRADIO_SERVER_PORT)")
    ap.add_argument("--share", action="store_true", help="also serve through a temporary public share link")
    args = ap.parse_args(argv)
    if args.model:
        os.environ["MTL_MODEL"] = args.model
    get_model()  # load once, now: a bad --model fails here with its own message, not at the first request
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share or None, max_file_size=MAX_FILE_SIZE,
        show_error=True, allowed_paths=[str(WORK_DIR)])


if __name__ == "__main__":
    main()
