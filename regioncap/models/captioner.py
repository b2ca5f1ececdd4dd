"""Caption generator: an RNN language model conditioned on the region vector v_i.

The region vector sets the initial hidden state and is fed again with every word, so long
captions do not drift from their region. Training is teacher forcing with cross-entropy
(padding ignored). Inference is batched over all regions at once: greedy decoding and beam
search, both returning the sequence log-probability (sum over the emitted words and <end>)
as the caption score.

Decoding never emits <pad>, <start> or <unk>, and <end> is barred at the first step so a
caption has at least one word.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from regioncap.data.vocab import END, PAD, START, UNK
from regioncap.models.config import CaptionerConfig


class CaptionDecoder(nn.Module):
    """GRU/LSTM decoder. Tokens exchanged with callers carry no specials."""

    def __init__(self, vocab_size: int, cfg: CaptionerConfig, joint_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=PAD)
        rnn_cls = nn.LSTM if cfg.rnn == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            cfg.embed_dim + joint_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.init_h = nn.Linear(joint_dim, cfg.num_layers * cfg.hidden_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, vocab_size)
        banned = torch.zeros(vocab_size, dtype=torch.bool)
        banned[[PAD, START, UNK]] = True
        self.register_buffer("banned", banned, persistent=False)

    # -- shared pieces ---------------------------------------------------------------------------
    def _initial_state(self, v: Tensor):
        """Hidden state from region vectors v [N, D] -> [layers, N, H] (LSTM: (h, c) with c = 0)."""
        n = v.shape[0]
        h = torch.tanh(self.init_h(v)).view(n, self.cfg.num_layers, self.cfg.hidden_dim).transpose(0, 1)
        h = h.contiguous()
        return (h, torch.zeros_like(h)) if self.cfg.rnn == "lstm" else h

    def _step(self, v: Tensor, words: Tensor, state):
        """One decoding step: v [N, D], words [N] -> (log-probs [N, V], new state)."""
        x = torch.cat([self.embed(words), v], dim=-1)[:, None, :]  # [N, 1, E + D]
        out, state = self.rnn(x, state)
        return F.log_softmax(self.out(out[:, 0]), dim=-1), state

    def _mask(self, logp: Tensor, step: int) -> Tensor:
        logp = logp.masked_fill(self.banned, float("-inf"))
        if step == 0:
            logp[:, END] = float("-inf")
        return logp

    # -- training ---------------------------------------------------------------------------------
    def loss(self, v: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forcing cross-entropy, averaged over the real target tokens (words + <end>).

        Args:
            v: FloatTensor[R, D] region vectors.
            tokens: LongTensor[R, L] word ids without specials, padded (any value past ``lengths``
                is ignored); cut to ``cfg.max_len`` words.
            lengths: LongTensor[R] number of words per row (0 allowed: the target is just <end>).

        Returns:
            scalar FloatTensor (0, still attached to the parameters, when R == 0).
        """
        r = tokens.shape[0]
        if r == 0:
            return self.out.weight.sum() * 0.0
        max_len = self.cfg.max_len
        lengths = lengths.clamp(min=0, max=min(max_len, tokens.shape[1])).to(tokens.device)
        width = int(lengths.max()) + 1
        pos = torch.arange(width, device=tokens.device)[None, :]  # [1, W]
        # lengths <= tokens.shape[1], so the first W-1 columns hold every word
        words = tokens[:, : width - 1].masked_fill(pos[:, : width - 1] >= lengths[:, None], PAD)  # [R, W-1]
        inputs = torch.cat([words.new_full((r, 1), START), words], dim=1)  # [R, W]
        target = torch.cat([words, words.new_full((r, 1), PAD)], dim=1)
        target = target.masked_fill(pos == lengths[:, None], END)  # [R, W]
        x = torch.cat([self.embed(inputs), v[:, None, :].expand(-1, width, -1)], dim=-1)
        out, _ = self.rnn(x, self._initial_state(v))
        logits = self.out(self.drop(out))  # [R, W, V]
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1), ignore_index=PAD)

    # -- inference ---------------------------------------------------------------------------------
    def greedy(self, v: Tensor, max_len: int | None = None) -> tuple[list[list[int]], Tensor]:
        """Batched greedy decoding.

        Args:
            v: FloatTensor[R, D].  max_len: most words per caption (default ``cfg.max_len``).

        Returns:
            (word ids per region without specials, FloatTensor[R] sequence log-probability).
        """
        max_len = max_len or self.cfg.max_len
        r = v.shape[0]
        state = self._initial_state(v)
        words = v.new_full((r,), START, dtype=torch.long)
        score = v.new_zeros(r)
        done = torch.zeros(r, dtype=torch.bool, device=v.device)
        seqs = []
        for step in range(max_len):
            if r == 0 or bool(done.all()):
                break
            logp, state = self._step(v, words, state)
            best, words = self._mask(logp, step).max(dim=-1)
            score = score + best.masked_fill(done, 0.0)
            words = words.masked_fill(done, PAD)
            seqs.append(words)
            done = done | (words == END)
        ids = torch.stack(seqs, dim=1).tolist() if seqs else [[] for _ in range(r)]
        return [_strip(row) for row in ids], score

    def beam_search(self, v: Tensor, beam_size: int | None = None, max_len: int | None = None):
        """Batched beam search over all regions; never scores below greedy decoding.

        A plain beam can lose the greedy path (it is pruned for prefixes that later finish worse),
        so greedy decoding is run too and, per region, the caption with the higher log-probability
        is kept. ``beam_size=1`` is exactly greedy decoding.

        Returns:
            (word ids per region without specials, FloatTensor[R] sequence log-probability).
        """
        beam_size = beam_size or self.cfg.beam_size
        greedy_ids, greedy_score = self.greedy(v, max_len)
        if beam_size <= 1:
            return greedy_ids, greedy_score
        beam_ids, beam_score = self._beam(v, beam_size, max_len)
        better = beam_score > greedy_score
        ids = [b if keep else g for b, g, keep in zip(beam_ids, greedy_ids, better.tolist())]
        return ids, torch.where(better, beam_score, greedy_score)

    def _beam(self, v: Tensor, beam_size: int, max_len: int | None = None):
        """Plain batched beam search (sum of log-probabilities, no length penalty)."""
        max_len = max_len or self.cfg.max_len
        r, k = v.shape[0], beam_size
        if r == 0:
            return [], v.new_zeros(0)
        vk = v.repeat_interleave(k, dim=0)  # [R*K, D]
        state = self._initial_state(vk)
        words = v.new_full((r * k,), START, dtype=torch.long)
        score = v.new_full((r, k), float("-inf"))
        score[:, 0] = 0.0  # all beams start identical: keep one alive
        done = torch.zeros(r, k, dtype=torch.bool, device=v.device)
        seqs = v.new_zeros((r, k, 0), dtype=torch.long)
        for step in range(max_len):
            logp, state = self._step(vk, words, state)
            logp = self._mask(logp, step).view(r, k, -1)  # [R, K, V]
            # a finished beam continues with a single zero-cost <pad> so it keeps its place
            finished = torch.full_like(logp[0, 0], float("-inf"))
            finished[PAD] = 0.0
            logp = torch.where(done[..., None], finished, logp)
            cand = (score[..., None] + logp).view(r, -1)  # [R, K*V]
            score, flat = cand.topk(k, dim=1)  # [R, K]
            src, words2 = flat // self.vocab_size, flat % self.vocab_size
            seqs = torch.cat([seqs.gather(1, src[..., None].expand(-1, -1, seqs.shape[2])), words2[..., None]], 2)
            done = done.gather(1, src) | (words2 == END)
            gather = (src + torch.arange(r, device=v.device)[:, None] * k).view(-1)
            state = tuple(s[:, gather] for s in state) if isinstance(state, tuple) else state[:, gather]
            words = words2.view(-1)
            # sums of log-probs only fall: stop once no live beam can beat a finished one
            best_done = score.masked_fill(~done, float("-inf")).amax(dim=1)
            best_live = score.masked_fill(done, float("-inf")).amax(dim=1)
            if bool((best_done >= best_live).all()):
                break
        best = score.argmax(dim=1)  # [R]
        rows = seqs[torch.arange(r, device=v.device), best].tolist()
        return [_strip(row) for row in rows], score[torch.arange(r, device=v.device), best]


def _strip(ids: list[int]) -> list[int]:
    """Word ids up to (not including) <end>, without padding."""
    out = []
    for i in ids:
        if i == END:
            break
        if i != PAD:
            out.append(i)
    return out
