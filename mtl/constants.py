"""Conventions shared by the model, the face pipeline, the forge and training."""

FACE_SIZE = 256  # the paper's input: a 256x256 RGB face crop
CROP_SCALE = 1.3  # the square crop is 1.3 x the face box, centred on it (paper, and the authors' dataset scripts)

# A checkpoint directory (or Hub repository): the constructor arguments and the weights (safetensors only).
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Manipulation families the forge makes and a method head can predict, in this order.
# Each maps to the FaceForensics++ method it imitates (shown to users).
FAMILIES = ("deepfake", "reenact", "faceswap", "selfblend")
FAMILY_DISPLAY = {
    "deepfake": "Deepfakes-like (autoencoder face swap)",
    "reenact": "Face2Face-like (expression reenactment)",
    "faceswap": "FaceSwap-like (graphics face swap)",
    "selfblend": "blended / retouched face (self-blend)",
}
