"""Phrase encoder (the seed's AlignmentDecoderRNN): embedding + GRU -> FC -> L2-normalised s_t."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from regioncap.data.vocab import PAD
from regioncap.models.config import TextEncoderConfig


class TextEncoder(nn.Module):
    """Embedding + GRU; the final hidden state (both directions if bidirectional) -> FC -> L2 norm.

    ``concepts=True`` adds ``concepts``: a linear map from the joint space to the vocabulary, used in
    training only (:func:`concept_loss`) to ask of a region vector which words its phrases use.
    """

    def __init__(self, vocab_size: int, cfg: TextEncoderConfig, joint_dim: int, concepts: bool = False):
        super().__init__()
        self.max_len = cfg.max_len
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.rnn = nn.GRU(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        directions = 2 if cfg.bidirectional else 1
        self.project = nn.Linear(cfg.hidden_dim * directions, joint_dim)
        self.directions = directions
        self.concepts = nn.Linear(joint_dim, vocab_size) if concepts else None

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Encode phrases.

        Args:
            tokens: LongTensor[P, L] token ids without specials, padded with PAD (0).
            lengths: LongTensor[P] real lengths; 0 is allowed (an empty phrase encodes the PAD
                embedding, which is zero, so it gets a defined vector from the GRU's biases).
                Tokens past ``cfg.max_len`` are ignored.

        Returns:
            FloatTensor[P, D] with unit L2 norm.
        """
        p = tokens.shape[0]
        if p == 0:
            return self.project.weight.new_zeros((0, self.project.out_features))
        tokens = tokens[:, : self.max_len]
        if tokens.shape[1] == 0:
            tokens = tokens.new_full((p, 1), PAD)
        lengths = lengths.clamp(min=1, max=tokens.shape[1]).cpu()
        tokens = tokens[:, : int(lengths.max())]
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # [layers * directions, P, H], already in the input order
        last = h_n.view(-1, self.directions, p, h_n.shape[-1])[-1]  # [directions, P, H]
        h = torch.cat(list(last), dim=-1)  # [P, directions * H]
        return F.normalize(self.project(h), dim=-1)


def concept_targets(tokens: Tensor, lengths: Tensor, region: Tensor, num_regions: int, vocab_size: int,
                    also: Tensor | None = None) -> Tensor:
    """Which words each region's phrases use: FloatTensor[R, V] of 0/1.

    Args:
        tokens: LongTensor[P, L] (padded with PAD); lengths: LongTensor[P]; region: LongTensor[P], the
            region (0..R-1) each phrase names.
        also: optional LongTensor[V]: a word w also marks word ``also[w]`` (itself for most words), e.g.
            :meth:`~regioncap.data.vocab.Vocabulary.singular_ids`, so that "two stars" also asks its
            region for "star", the word that thousands of single stars teach.
    """
    out = torch.zeros(num_regions, vocab_size, device=tokens.device)
    real = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    rows, words = region[:, None].expand_as(tokens)[real], tokens[real]
    out[rows, words] = 1.0
    if also is not None:
        out[rows, also.to(words.device)[words]] = 1.0
    out[:, PAD] = 0.0
    return out


def concept_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Word prediction from region vectors ("visual concepts", Fang et al. 2015), as a softmax.

    Each region's target is the distribution that spreads evenly over the words its phrases use;
    the loss is its cross-entropy with ``softmax(logits)`` (Mahajan et al. 2018 trained multi-label
    hashtags this way), averaged over the regions that have phrases. Every word a region's phrases
    use (a pattern, a colour, a shape) has to be readable from its vector, which the ranking losses
    alone do not ask when no two regions of an image differ by that word. A softmax makes the words
    compete: raising "striped" lowers "dotted". Independent per-word sigmoids (binary cross-entropy)
    were measured to learn patterns far more slowly: on a fixed batch, 55 % pattern accuracy after 80
    steps, against 99 % for a softmax over the pattern words.

    Args:
        logits: FloatTensor[R, V] (``TextEncoder.concepts`` of the region vectors).
        targets: FloatTensor[R, V] from :func:`concept_targets`.
    """
    counts = targets.sum(dim=1)
    named = counts > 0
    if not named.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits[named].float(), dim=1)
    return -(targets[named] * log_p).sum(dim=1).div(counts[named]).mean()
