"""The Wav2Lip generator (Prajwal et al., 2020) as ``nn.Module``s, nothing else.

Layer names and shapes are those of the published checkpoints (``wav2lip.pth``,
``wav2lip_gan.pth``), so their ``state_dict`` loads with ``strict=True``. The generator takes a
16-step mel window ``(B, 1, 80, 16)`` and a face ``(B, 6, 96, 96)`` — the face with its lower
half blanked, stacked on a reference face, BGR in 0..1 — and returns the face ``(B, 3, 96, 96)``
with the mouth speaking that window. Loading lives in :func:`lipsync.wav2lip.load_model`.

The forward pass is split in two because a still avatar's face never changes: its
:meth:`Wav2Lip.encode_face` features are computed once and every frame runs only
:meth:`Wav2Lip.decode` (the audio encoder and the face decoder).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2d(nn.Module):
    """Convolution, batch norm and ReLU; ``residual`` adds the input before the ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        result: torch.Tensor = self.act(out)
        return result


class Conv2dTranspose(nn.Module):
    """Transposed convolution, batch norm and ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int,
        padding: int,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.act(self.conv_block(x))
        return result


def _res(channels: int) -> Conv2d:
    return Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, residual=True)


def _up(cin: int, cout: int) -> Conv2dTranspose:
    return Conv2dTranspose(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1)


class Wav2Lip(nn.Module):
    """The Wav2Lip generator for 96x96 faces (about 36.3 M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(6, 16, kernel_size=7, stride=1, padding=3)),  # 96x96
                nn.Sequential(Conv2d(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48x48
                nn.Sequential(Conv2d(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24x24
                nn.Sequential(Conv2d(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12x12
                nn.Sequential(Conv2d(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6x6
                nn.Sequential(Conv2d(256, 512, 3, 2, 1), _res(512)),  # 3x3
                nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1x1
            ]
        )
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1),
            _res(32),
            _res(32),
            Conv2d(32, 64, 3, (3, 1), 1),
            _res(64),
            _res(64),
            Conv2d(64, 128, 3, 3, 1),
            _res(128),
            _res(128),
            Conv2d(128, 256, 3, (3, 2), 1),
            _res(256),
            Conv2d(256, 512, 3, 1, 0),
            Conv2d(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1x1
                nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3x3
                nn.Sequential(_up(1024, 512), _res(512), _res(512)),  # 6x6
                nn.Sequential(_up(768, 384), _res(384), _res(384)),  # 12x12
                nn.Sequential(_up(512, 256), _res(256), _res(256)),  # 24x24
                nn.Sequential(_up(320, 128), _res(128), _res(128)),  # 48x48
                nn.Sequential(_up(160, 64), _res(64), _res(64)),  # 96x96
            ]
        )
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1),
            nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
            nn.Sigmoid(),
        )

    def encode_face(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """The face encoder's features, coarsest last, of faces ``(B, 6, 96, 96)``."""
        features = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            features.append(x)
        return features

    def decode(self, mels: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Faces ``(B, 3, 96, 96)`` for mel windows ``(B, 1, 80, 16)`` and face features.

        Features of batch size 1 are broadcast to the batch of mel windows.
        """
        batch = mels.shape[0]
        x = self.audio_encoder(mels)  # (B, 512, 1, 1)
        for block, skip in zip(self.face_decoder_blocks, reversed(features), strict=True):
            x = block(x)
            x = torch.cat((x, skip.expand(batch, -1, -1, -1)), dim=1)
        result: torch.Tensor = self.output_block(x)
        return result

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self.decode(mels, self.encode_face(faces))


class Wav2LipDecoder(nn.Module):
    """The per-frame part of :class:`Wav2Lip` with the face features as separate inputs.

    This is the graph exported to ONNX: one mel input and seven feature inputs.
    """

    def __init__(self, model: Wav2Lip) -> None:
        super().__init__()
        self.model = model

    def forward(self, mels: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        return self.model.decode(mels, list(features))
