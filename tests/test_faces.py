import numpy as np
import pytest

from mtl.faces import (FaceBox, FaceCrop, crop_face, crop_square, detect_faces, face_landmarks, landmarks_in_box,
                       paste_mask, square_around)


def test_square_around_is_centred_and_scaled_by_the_longer_side():
    box = FaceBox(100, 50, 200, 170)  # 100 wide, 120 tall
    assert square_around(box) == pytest.approx((150.0, 110.0, 156.0))
    assert square_around(box, scale=1.0) == pytest.approx((150.0, 110.0, 120.0))


def test_crop_square_maps_a_known_square_to_the_crop():
    # a frame whose pixel value encodes its column, so the crop shows which columns it sampled
    frame = np.tile(np.arange(400, dtype=np.float32), (300, 1))
    crop = crop_square(frame, (200.0, 150.0, 100.0), size=50)  # columns 150..250, 2 frame px per crop px
    # crop pixel u covers frame [150 + 2u, 152 + 2u): its centre is frame column 150.5 + 2u
    assert crop[25, 0] == pytest.approx(150.5, abs=0.01)
    assert crop[25, 49] == pytest.approx(248.5, abs=0.01)


def test_crop_square_pads_black_outside_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_square(frame, (0.0, 50.0, 100.0), size=64)  # left half outside the frame
    assert crop.shape == (64, 64, 3)
    assert crop[:, :30].max() == 0
    assert crop[:, 34:].min() == 200


def test_paste_mask_inverts_crop_square_within_a_pixel():
    frame_mask = np.zeros((240, 320), np.float32)
    frame_mask[90:150, 130:190] = 1.0  # a 60x60 block inside the square
    box = FaceBox(110, 70, 210, 170)
    crop = FaceCrop(np.zeros((256, 256, 3), np.uint8), box, square_around(box))
    on_crop = crop_square(frame_mask, crop.square, 256)
    back = paste_mask(on_crop, crop, frame_mask.shape)
    assert back.shape == frame_mask.shape and back.dtype == np.float32
    diff = np.abs((back > 0.5).astype(int) - frame_mask.astype(int))
    assert diff.sum() == 0
    # outside the square there is nothing
    cx, cy, side = crop.square
    assert back[:, : int(cx - side / 2) - 1].max() == 0


def test_paste_mask_of_a_full_crop_covers_exactly_the_square():
    box = FaceBox(40.0, 30.0, 120.0, 110.0)
    crop = crop_face(np.zeros((200, 200, 3), np.uint8), box, size=128, scale=1.0)
    back = paste_mask(np.ones((128, 128), np.float32), crop, (200, 200))
    ys, xs = np.nonzero(back > 0.5)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (40, 119, 30, 109)


def test_detect_faces_finds_the_astronaut(astronaut):
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.8
    # her face is in the upper middle of the picture, about 100 px wide
    assert 150 < f.center[0] < 300 and 70 < f.center[1] < 180
    assert 70 < f.width < 150
    assert f.keypoints is not None and f.keypoints.shape == (6, 2)


def test_detect_faces_maps_boxes_back_from_a_downscaled_large_frame(astronaut):
    big = np.kron(astronaut, np.ones((5, 5, 1), np.uint8))  # 2560 px: detected at 1920 and mapped back
    small_box = detect_faces(astronaut)[0]
    big_box = detect_faces(big)[0]
    assert big_box.center == pytest.approx((small_box.center[0] * 5, small_box.center[1] * 5), abs=25)


def test_no_face_in_a_blank_image():
    assert detect_faces(np.full((200, 200, 3), 127, np.uint8)) == []
    assert face_landmarks(np.full((200, 200, 3), 127, np.uint8)) == []


def test_landmarks_belong_to_the_detected_face(astronaut):
    box = detect_faces(astronaut)[0]
    faces = face_landmarks(astronaut)
    assert faces and faces[0].shape[1] == 2 and faces[0].shape[0] in (468, 478)
    lm = landmarks_in_box(faces, box)
    assert lm is not None
    assert box.x0 - 20 < lm[:, 0].mean() < box.x1 + 20


def test_crop_face_output(astronaut):
    crop = crop_face(astronaut, detect_faces(astronaut)[0])
    assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
    assert crop.square[2] == pytest.approx(1.3 * max(crop.box.width, crop.box.height))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        detect_faces(np.zeros((10, 10), np.uint8))
