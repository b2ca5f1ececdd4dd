"""The text side of a saved model: vocabulary + text encoder, for searching an index.

A search encodes a sentence's phrases and compares them with stored region vectors: it needs neither
the detector nor the region encoder, nor torchvision. :class:`TextModel` loads only the text encoder's
weights from a model folder (strictly, never unpickling), so that ``python -m regioncap search`` starts
in about the time of ``import torch``. It has the identity of the whole model
(:func:`~regioncap.models.identity.state_identity` over every weight of the file), so an index built by
that model accepts it.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from regioncap import hub
from regioncap.data.vocab import PAD, UNK, Vocabulary, tokenize
from regioncap.errors import TextError
from regioncap.models.config import RegionCaptionerConfig
from regioncap.models.identity import state_identity
from regioncap.models.text_encoder import TextEncoder

logger = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2000  # longer input is cut before tokenizing (the encoder keeps max_len tokens anyway)
PREFIX = "text_encoder."


def phrase_ids(vocab: Vocabulary, max_len: int, phrase: str) -> list[int]:
    """Token ids of a user phrase (cut to ``max_len``). Empty / all unknown words -> TextError."""
    if not isinstance(phrase, str) or not phrase.strip():
        raise TextError("empty phrase: type a few words, e.g. 'a red circle'")
    ids = vocab.encode(tokenize(phrase[:MAX_TEXT_CHARS]), max_len=max_len)
    if all(i == UNK for i in ids):
        raise TextError(f"no word of {phrase.strip()[:60]!r} is in the model's vocabulary")
    return ids


def encode_phrases(encoder: TextEncoder, vocab: Vocabulary, max_len: int, phrases, joint_dim: int) -> Tensor:
    """Phrase vectors FloatTensor[P, D] (unit norm, on CPU, an ordinary tensor); each phrase checked by
    :func:`phrase_ids`. ``encoder`` must be in eval mode."""
    if isinstance(phrases, str):
        phrases = [phrases]
    seqs = [torch.tensor(phrase_ids(vocab, max_len, p), dtype=torch.long) for p in phrases]
    if not seqs:
        return torch.zeros(0, joint_dim)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = pad_sequence(seqs, batch_first=True, padding_value=PAD)
    device = next(encoder.parameters()).device
    with torch.inference_mode():
        s = encoder(tokens.to(device), lengths).float().cpu()
    return s.clone()


class TextModel:
    """Vocabulary + text encoder of a saved RegionCaptioner, with the whole model's identity.

    Has the parts of a RegionCaptioner's interface a search uses: ``config``, ``vocab``,
    ``name_or_path``, ``identity``, :meth:`phrase_ids`, :meth:`encode_text`.
    """

    def __init__(self, config: RegionCaptionerConfig, vocab: Vocabulary, text_encoder: TextEncoder,
                 identity: str, name_or_path: str):
        self.config, self.vocab, self.text_encoder = config, vocab, text_encoder.eval()
        self.identity, self.name_or_path = identity, name_or_path
        self.match_threshold: float | None = None  # the folder's calibrated threshold (from_pretrained)

    def __repr__(self) -> str:
        return f"TextModel({self.name_or_path!r}, id {self.identity[:12]})"

    def phrase_ids(self, phrase: str) -> list[int]:
        return phrase_ids(self.vocab, self.config.text_encoder.max_len, phrase)

    def encode_text(self, phrases) -> Tensor:
        """Phrase vectors FloatTensor[P, D], exactly as ``RegionCaptioner.encode_text`` computes them."""
        return encode_phrases(self.text_encoder, self.vocab, self.config.text_encoder.max_len, phrases,
                              self.config.joint_dim)

    @classmethod
    def from_pretrained(cls, name_or_path, revision: str | None = None, device: str | torch.device = "cpu"
                        ) -> TextModel:
        """Load the text side of a model folder or Hub repo id: the folder read by
        :func:`regioncap.hub.read_model_folder` (as ``RegionCaptioner.from_pretrained`` reads it), the text
        encoder's weights strictly. Errors -> ModelFileError."""
        folder = hub.read_model_folder(name_or_path, revision)
        config, vocab, state = folder.config, folder.vocab, folder.weights
        encoder = TextEncoder(config.vocab_size, config.text_encoder, config.joint_dim,
                              concepts=config.concept_loss_weight > 0)
        mine = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
        hub.check_state_dict(encoder.state_dict(), mine, folder.weights_path, ["embed.weight"], folder.vocab_path)
        encoder.load_state_dict(mine, strict=True)
        identity = state_identity(config.to_dict(), vocab.id_to_token, state)
        logger.info("loaded the text side of %s (id %s)", name_or_path, identity[:12])
        model = cls(config, vocab, encoder.to(device), identity, str(name_or_path))
        model.match_threshold = folder.match_threshold
        return model
