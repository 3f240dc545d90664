"""Image processor for Janus-Pro: DeepSeek's understanding and generation preprocessing, and postprocessing."""

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import resize as np_resize
from transformers.image_transforms import to_pil_image
from transformers.image_utils import (
    ChannelDimension,
    ImageInput,
    ImageType,
    PILImageResampling,
    SizeDict,
    get_image_type,
    infer_channel_dimension_format,
    make_flat_list_of_images,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

# PIL modes whose `convert("RGB")` is lossless enough to feed the model. High bit-depth modes ("I", "I;16", "F") are
# clipped to 0..255 by PIL (a 16-bit photo turns white), "LAB" is not converted colorimetrically, and "La" cannot be
# converted at all: those are refused with an explanation instead of silently giving a wrong image.
RGB_CONVERTIBLE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")


class JanusProImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    min_size (`int`, *optional*, defaults to 14):
        Floor of each side after the long side is resized to `size` (keeps very thin images from vanishing).
    background_color (`list[int]`, *optional*, defaults to `[127, 127, 127]`):
        RGB fill of the square canvas the resized image is pasted on.
    """

    min_size: int
    background_color: list[int] | tuple[int, ...]


class JanusProImageProcessor(PilBackend):
    r"""
    Janus-Pro image processor, a PIL/NumPy port of DeepSeek's `VLMImageProcessor` that reproduces it exactly.

    Understanding images (`__call__` / `preprocess`): convert to RGB with PIL's `Image.convert("RGB")` (as DeepSeek's
    loader does; an alpha channel is dropped, not composited), resize with PIL bicubic so the long side is
    `size` and each side is `max(int(side / long * size), min_size)`, paste centred on a `size` x `size` canvas of
    `background_color`, rescale by 1/255 and normalise with mean/std 0.5. Returns `pixel_values` of shape
    `(num_images, 3, size, size)`, one row per image over the whole batch.

    Generation images (`preprocess_for_generation`): the VQ tokenizer's input, short side resized to `size`, long side
    centre-cropped, scaled to [-1, 1]. Decoded VQ images go back to pixels with `postprocess`.

    Accepts PIL images, NumPy arrays and torch tensors (HWC or CHW, uint8 or float in [0, 1]) and paths or URLs.
    DeepSeek's `preprocessor_config.json` (`"image_processor_type": "VLMImageProcessor"`, `image_size`) loads as is.

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers_janus import JanusProImageProcessor
    >>> image_processor = JanusProImageProcessor()  # Janus-Pro defaults: 384 x 384
    >>> image_processor(Image.new("RGB", (640, 480))).pixel_values.shape
    torch.Size([1, 3, 384, 384])
    ```"""

    resample = PILImageResampling.BICUBIC
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    size = {"height": 384, "width": 384}
    min_size = 14
    background_color = (127, 127, 127)
    do_convert_rgb = True
    do_resize = True
    do_pad = True
    do_rescale = True
    do_normalize = True
    return_tensors = "pt"
    valid_kwargs = JanusProImageProcessorKwargs
    model_input_names = ["pixel_values"]
    # As `register_for_auto_class("AutoImageProcessor")`: `save_pretrained` copies this code and writes `auto_map`.
    _auto_class = "AutoImageProcessor"
    # Refuse images above 2**28 pixels (16384 x 16384): decoding one already takes ~800 MB and the model only sees
    # `size` x `size`; raise this class attribute to accept larger inputs.
    max_image_pixels = 2**28

    def __init__(self, **kwargs: Unpack[JanusProImageProcessorKwargs]):
        # DeepSeek's `preprocessor_config.json` stores the side as `image_size`; we store it as `size`.
        image_size = kwargs.pop("image_size", None)
        if image_size is not None and kwargs.get("size") is None:
            kwargs["size"] = {"height": image_size, "width": image_size}
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        if self.size.height != self.size.width:
            raise ValueError(
                f"Janus-Pro works on square images, got size height={self.size.height}, width={self.size.width}; "
                "pass `size={'height': S, 'width': S}` (384 for the published checkpoints)."
            )
        self.background_color = tuple(int(c) for c in self.background_color)

    @property
    def image_size(self) -> int:
        """Side of the square model input (DeepSeek's `image_size`)."""
        return self.size.height

    def _check_image_size(self, height: int, width: int):
        if height < 1 or width < 1:
            raise ValueError(
                f"Got an empty image of {width}x{height} pixels (width x height); every image needs at least 1x1 "
                "pixels. Check how the image was loaded or cropped."
            )
        if height * width > self.max_image_pixels:
            raise ValueError(
                f"The image is {width}x{height} = {height * width} pixels, more than the {self.max_image_pixels} this "
                f"processor accepts (Janus-Pro sees {self.image_size}x{self.image_size} anyway). Downscale it first, "
                f"e.g. `image.thumbnail(({self.image_size * 4}, {self.image_size * 4}))`, or raise "
                f"`{self.__class__.__name__}.max_image_pixels`."
            )

    def _to_pil(self, image, input_data_format: str | ChannelDimension | None = None) -> PIL.Image.Image:
        """Turn a PIL image, array or tensor into a PIL image after checking its size, without copying huge inputs."""
        image_type = get_image_type(image)
        if image_type not in (ImageType.PIL, ImageType.NUMPY, ImageType.TORCH):
            raise ValueError(
                f"Unsupported image type {type(image).__name__}; pass a PIL image, a NumPy array, a torch tensor or "
                "a path/URL."
            )
        if image_type == ImageType.PIL:
            self._check_image_size(image.height, image.width)
            return image

        if image.ndim == 2:
            image = image[..., None]
            input_data_format = ChannelDimension.LAST
        if image.ndim != 3:
            raise ValueError(
                f"Expected one image of 2 or 3 dimensions (HW, HWC or CHW), got shape {tuple(image.shape)}; pass a "
                "batch as a list of images."
            )
        if input_data_format is None:
            input_data_format = infer_channel_dimension_format(image, num_channels=(1, 3, 4))
        if input_data_format == ChannelDimension.FIRST:
            height, width = image.shape[1], image.shape[2]
        else:
            height, width = image.shape[0], image.shape[1]
        self._check_image_size(height, width)

        if image_type == ImageType.TORCH:
            image = image.detach().cpu().numpy()
        if np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8:
            low, high = int(image.min()), int(image.max())
            if low < 0 or high > 255:
                raise ValueError(
                    f"Integer images must hold values in 0..255, got {image.dtype} values in {low}..{high}; scale "
                    "the image to uint8 first (e.g. 16-bit: `(image // 257).astype(np.uint8)`)."
                )
            image = image.astype(np.uint8)
        return to_pil_image(image, input_data_format=input_data_format)

    def _to_rgb(self, image, do_convert_rgb: bool = True, input_data_format=None) -> PIL.Image.Image:
        """PIL image of the input, converted with `Image.convert("RGB")` unless `do_convert_rgb` is False."""
        image = self._to_pil(image, input_data_format=input_data_format)
        if do_convert_rgb and image.mode != "RGB":
            if image.mode not in RGB_CONVERTIBLE_MODES:
                raise ValueError(
                    f"Cannot convert a PIL image of mode {image.mode!r} to RGB faithfully (supported modes: "
                    f"{', '.join(RGB_CONVERTIBLE_MODES)}). Convert it yourself first, e.g. scale 16-bit or float "
                    "images to 8-bit, or use `PIL.ImageCms` for LAB."
                )
            image = image.convert("RGB")
        return image

    def process_image(
        self,
        image: ImageInput,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        **kwargs,
    ) -> np.ndarray:
        """One input as a channels-first uint8 array, converted through PIL so the RGB conversion matches DeepSeek."""
        array = np.asarray(self._to_rgb(image, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format))
        if array.ndim == 2:
            return array[None]
        return np.moveaxis(array, -1, 0)

    def resize(
        self,
        image: np.ndarray,
        size: SizeDict,
        min_size: int = 14,
        resample: PILImageResampling | None = None,
        **kwargs,
    ) -> np.ndarray:
        """Resize so the long side is `size`, each side `max(int(side / long * size), min_size)` as DeepSeek does."""
        height, width = image.shape[-2:]
        long_side = max(height, width)
        new_height = max(int(height / long_side * size.height), min_size)
        new_width = max(int(width / long_side * size.width), min_size)
        return np_resize(
            image,
            size=(new_height, new_width),
            resample=resample if resample is not None else self.resample,
            data_format=ChannelDimension.FIRST,
            input_data_format=ChannelDimension.FIRST,
        )

    def pad_to_square(self, image: np.ndarray, background_color: tuple[int, ...]) -> np.ndarray:
        """Paste the image centred on a square canvas of its long side, as DeepSeek's `expand2square`."""
        num_channels, height, width = image.shape
        if height == width:
            return image
        if len(background_color) != num_channels:
            raise ValueError(
                f"`background_color` has {len(background_color)} values but the image has {num_channels} channels; "
                "pass one value per channel."
            )
        side = max(height, width)
        canvas = np.empty((num_channels, side, side), dtype=image.dtype)
        canvas[:] = np.asarray(background_color, dtype=image.dtype)[:, None, None]
        top, left = (side - height) // 2, (side - width) // 2
        canvas[:, top : top + height, left : left + width] = image
        return canvas

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...] | None,
        image_std: float | tuple[float, ...] | None,
        min_size: int,
        background_color: tuple[int, ...],
        return_tensors: str | TensorType | None,
        do_pad: bool = True,
        **kwargs,
    ) -> BatchFeature:
        processed_images = []
        for image in images:
            if do_resize:
                image = self.resize(image, size=size, min_size=min_size, resample=resample)
            if do_pad:
                image = self.pad_to_square(image, background_color=tuple(background_color))
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed_images.append(image)
        return BatchFeature(data={"pixel_values": processed_images}, tensor_type=return_tensors)

    def preprocess_for_generation(
        self,
        images: ImageInput,
        size: int | None = None,
        return_tensors: str | TensorType | None = "pt",
    ) -> BatchFeature:
        r"""
        Prepare images for the VQ tokenizer (generation training targets, image editing): convert to RGB, resize with
        PIL bicubic so the short side is `size`, centre-crop the long side at offset `(long - size) // 2`, and scale
        to [-1, 1] as `x / 127.5 - 1`.

        Args:
            images (`ImageInput`): One image or a list of images (PIL, NumPy, torch, paths).
            size (`int`, *optional*): Output side; defaults to `self.image_size`.
            return_tensors (`str` or `TensorType`, *optional*, defaults to `"pt"`): Type of `pixel_values`.

        Returns:
            [`BatchFeature`] with `pixel_values` of shape `(num_images, 3, size, size)`, float32 in [-1, 1].
        """
        size = size if size is not None else self.image_size
        images = make_flat_list_of_images(self.fetch_images(images))
        processed_images = []
        for image in images:
            image = self._to_rgb(image)
            width, height = image.size
            if min(width, height) != size:
                # torchvision's `Resize(size)` rule: the long side is `int(size * long / short)`.
                if width <= height:
                    width, height = size, int(size * height / width)
                else:
                    width, height = int(size * width / height), size
                image = image.resize((width, height), resample=PIL.Image.Resampling.BICUBIC)
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1
            processed_images.append(np.moveaxis(array, -1, 0))
        return BatchFeature(data={"pixel_values": processed_images}, tensor_type=return_tensors)

    def postprocess(
        self,
        images: "torch.Tensor | np.ndarray | list",
        output_type: str = "pil",
    ) -> "list[PIL.Image.Image] | np.ndarray | torch.Tensor":
        r"""
        Turn decoded VQ images (channels first, values in about [-1, 1]) into pixels. `output_type` means what it means
        in diffusers' `VaeImageProcessor.postprocess`: `"np"` and `"pt"` are floats in [0, 1], `(x + 1) / 2` clipped;
        `"pil"` images hold DeepSeek's exact uint8 pixels, `clip((x + 1) / 2 * 255, 0, 255)` truncated (use
        `np.asarray(image)` for them as an array).

        Args:
            images (`torch.Tensor`, `np.ndarray` or a list of them):
                `(batch, 3, height, width)` or `(3, height, width)`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` for a list of PIL images, `"np"` for a float32 array `(batch, height, width, 3)` in [0, 1],
                `"pt"` for a float32 tensor `(batch, 3, height, width)` in [0, 1].
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"`output_type` must be 'pil', 'np' or 'pt', got {output_type!r}.")
        if isinstance(images, (list, tuple)):
            images = [image.detach().float().cpu().numpy() if torch.is_tensor(image) else image for image in images]
            images = np.stack(images)
        elif torch.is_tensor(images):
            images = images.detach().float().cpu().numpy()
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"Expected decoded images of shape (batch, 3, height, width), got {images.shape}; pass the VQ "
                "decoder output before any permutation."
            )
        if output_type == "np":
            return np.ascontiguousarray(np.clip((images.transpose(0, 2, 3, 1) + 1) / 2, 0, 1))
        if output_type == "pt":
            return torch.from_numpy(np.clip((images + 1) / 2, 0, 1))
        pixels = np.clip((images.transpose(0, 2, 3, 1) + 1) / 2 * 255, 0, 255).astype(np.uint8)
        return [PIL.Image.fromarray(pixel.squeeze(-1) if pixel.shape[-1] == 1 else pixel) for pixel in pixels]


class VLMImageProcessor(JanusProImageProcessor):
    """
    Loader alias for DeepSeek's `preprocessor_config.json`, which names `"image_processor_type": "VLMImageProcessor"`:
    `AutoImageProcessor` resolves that name among registered classes, so this alias is registered under it. Loading
    gives a [`JanusProImageProcessor`], which saves under its own name.
    """

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> JanusProImageProcessor:
        return JanusProImageProcessor.from_pretrained(*args, **kwargs)

    @classmethod
    def from_dict(cls, *args, **kwargs) -> JanusProImageProcessor:
        # transformers >= 5.25's `AutoImageProcessor` reads the file itself and builds the class from its dict.
        return JanusProImageProcessor.from_dict(*args, **kwargs)


__all__ = ["JanusProImageProcessor", "VLMImageProcessor"]
