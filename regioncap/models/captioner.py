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


# candidates(): a live beam whose log-probability is this far below the region's best finished caption
# stops (e^-3 ~ 5 % as probable). Reranking can prefer a less probable, longer caption, so the beam runs
# past the best caption, but not on to captions no reranking setting on our validation data would pick.
CANDIDATE_MARGIN = 3.0


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
        if tokens.shape[0] == 0:
            return self.out.weight.sum() * 0.0
        logits, target = self._teacher_forced(v, tokens, lengths)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1), ignore_index=PAD)

    def _teacher_forced(self, v: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Logits FloatTensor[R, W, V] of every next token given the true ones, and the targets
        LongTensor[R, W] (words, then <end>, then <pad>); W = the longest row's words + 1."""
        r = tokens.shape[0]
        lengths = lengths.clamp(min=0, max=min(self.cfg.max_len, tokens.shape[1])).to(tokens.device)
        width = int(lengths.max()) + 1
        pos = torch.arange(width, device=tokens.device)[None, :]  # [1, W]
        # lengths <= tokens.shape[1], so the first W-1 columns hold every word
        words = tokens[:, : width - 1].masked_fill(pos[:, : width - 1] >= lengths[:, None], PAD)  # [R, W-1]
        inputs = torch.cat([words.new_full((r, 1), START), words], dim=1)  # [R, W]
        target = torch.cat([words, words.new_full((r, 1), PAD)], dim=1)
        target = target.masked_fill(pos == lengths[:, None], END)  # [R, W]
        x = torch.cat([self.embed(inputs), v[:, None, :].expand(-1, width, -1)], dim=-1)
        out, _ = self.rnn(x, self._initial_state(v))
        return self.out(self.drop(out)), target

    def sequence_log_probs(self, v: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Log-probability FloatTensor[R] of each row's words and <end> given its region vector, the
        number :meth:`candidates` gives a caption it decodes itself (in eval mode; args as :meth:`loss`).
        A row of ``cfg.max_len`` words has no <end> (decoding stops there) and none is counted."""
        if tokens.shape[0] == 0:
            return v.new_zeros(0)
        logits, target = self._teacher_forced(v, tokens, lengths)
        logp = F.log_softmax(logits.float(), dim=-1).gather(2, target[..., None])[..., 0]
        cut = (target == END) & (lengths.to(target.device) >= self.cfg.max_len)[:, None]
        return logp.masked_fill((target == PAD) | cut, 0.0).sum(1)

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
        is kept. ``beam_size=1`` is exactly greedy decoding. Greedy decoding is a beam of width 1,
        so both run in one loop with one RNN call per step (the per-step cost of a small batch is
        mostly reading the RNN's weights, so the greedy rows come almost free).

        Returns:
            (word ids per region without specials, FloatTensor[R] sequence log-probability).
        """
        beam_size = beam_size or self.cfg.beam_size
        if beam_size <= 1:
            return self.greedy(v, max_len)
        (greedy_ids, greedy_score), (beam_ids, beam_score) = self._beams(v, (1, beam_size), max_len)
        better = beam_score > greedy_score
        ids = [b if keep else g for b, g, keep in zip(beam_ids, greedy_ids, better.tolist())]
        return ids, torch.where(better, beam_score, greedy_score)

    def candidates(self, v: Tensor, beam_size: int | None = None, max_len: int | None = None
                   ) -> list[list[tuple[list[int], float]]]:
        """Several captions per region: every hypothesis that finished inside the beam, plus greedy's.

        Unlike :meth:`beam_search` the beam does not stop once its best caption is complete: it runs
        while a live beam is within ``CANDIDATE_MARGIN`` (log-probability) of the best finished caption
        (or until ``max_len``), so that longer, less probable captions ("a large black checkered square"
        after "a large black square") are collected too. Each
        hypothesis is recorded at the step it emits <end>, even if better ones later push it out of
        the beam. Deterministic, and batched over all regions (one RNN call per step).

        Args:
            v: FloatTensor[R, D].  beam_size: default ``cfg.beam_size``.  max_len: default ``cfg.max_len``.

        Returns:
            per region, distinct (word ids without specials, sequence log-probability) pairs, most
            probable first; never empty (greedy's caption and :meth:`beam_search`'s are among them).
        """
        beam_size = max(1, beam_size or self.cfg.beam_size)
        widths = (1, beam_size) if beam_size > 1 else (1,)
        results, pools = self._beams(v, widths, max_len, collect=True)
        out: list[dict[tuple[int, ...], float]] = [{} for _ in range(v.shape[0])]
        for best_ids, best_score in results:  # greedy's and the beam's best (maybe cut at max_len)
            for r, (ids, score) in enumerate(zip(best_ids, best_score.tolist())):
                out[r].setdefault(tuple(ids), score)
        for rows, seqs, scores in pools[-1]:
            for r, seq, score in zip(rows.tolist(), seqs.tolist(), scores.tolist()):
                out[r].setdefault(tuple(_strip(seq)), score)
        return [sorted(((list(k), sc) for k, sc in d.items()), key=lambda c: -c[1]) for d in out]

    def _beams(self, v: Tensor, widths: tuple[int, ...], max_len: int | None = None, collect: bool = False):
        """Plain beam searches of several widths over the same regions, stepped together.

        The RNN runs once per step over the rows of every width (width k: R*k rows, region-major),
        skipping rows whose beam has finished or is dead (most rows after a few words: captions are
        short); each width keeps its own scores, finished flags and sequences. Returns one
        (word ids per region, FloatTensor[R] log-probability) pair per width.

        ``collect=True`` runs on while a live beam is within CANDIDATE_MARGIN of the best finished
        caption (not only until the best caption is known) and also returns, per width, the hypotheses
        that emitted <end>: a list of (region LongTensor[n], sequences LongTensor[n, step + 1],
        log-probabilities FloatTensor[n]).
        """
        max_len = max_len or self.cfg.max_len
        r, dev = v.shape[0], v.device
        if r == 0:
            empty = [([], v.new_zeros(0)) for _ in widths]
            return (empty, [[] for _ in widths]) if collect else empty
        pools: list[list] = [[] for _ in widths]
        vk = torch.cat([v.repeat_interleave(k, dim=0) for k in widths])  # [R*sum(K), D]
        state = self._initial_state(vk)
        words = v.new_full((vk.shape[0],), START, dtype=torch.long)
        scores, dones, seqs = [], [], []
        for k in widths:
            score = v.new_full((r, k), float("-inf"))
            score[:, 0] = 0.0  # all beams start identical: keep one alive
            scores.append(score)
            dones.append(torch.zeros(r, k, dtype=torch.bool, device=dev))
            seqs.append(v.new_zeros((r, k, 0), dtype=torch.long))
        # a finished beam continues with a single zero-cost <pad> so it keeps its place
        finished = v.new_full((self.vocab_size,), float("-inf"))
        finished[PAD] = 0.0
        region = torch.arange(r, device=dev)[:, None]
        for step in range(max_len):
            # finished beams (they only add <pad>) and dead ones (score -inf) need no RNN step
            need = torch.cat([(~d & (sc > float("-inf"))).view(-1) for d, sc in zip(dones, scores)])
            if bool(need.all()):
                logp_all, state = self._step(vk, words, state)
            else:
                idx = need.nonzero().squeeze(1)
                logp_need, state_need = self._step(vk[idx], words[idx], _rows(state, idx))
                logp_all = logp_need.new_zeros(vk.shape[0], self.vocab_size).index_copy_(0, idx, logp_need)
                state = (tuple(s.index_copy(1, idx, n) for s, n in zip(state, state_need))
                         if isinstance(state, tuple) else state.index_copy(1, idx, state_need))
            logp_all = self._mask(logp_all, step)
            gathers, next_words, offset, stop = [], [], 0, True
            for j, (k, logp) in enumerate(zip(widths, logp_all.split([r * k for k in widths]))):
                logp = torch.where(dones[j][..., None], finished, logp.view(r, k, -1))  # [R, K, V]
                cand = (scores[j][..., None] + logp).view(r, -1)  # [R, K*V]
                scores[j], flat = cand.topk(k, dim=1)  # [R, K]
                src, words2 = flat // self.vocab_size, flat % self.vocab_size
                seqs[j] = torch.cat([seqs[j].gather(1, src[..., None].expand(-1, -1, seqs[j].shape[2])),
                                     words2[..., None]], 2)
                ended = (words2 == END) & (scores[j] > float("-inf"))  # [R, K] finished at this step
                dones[j] = dones[j].gather(1, src) | (words2 == END)
                gathers.append((src + region * k).view(-1) + offset)
                next_words.append(words2.view(-1))
                offset += r * k
                # sums of log-probs only fall: stop once no live beam can beat a finished one
                best_done = scores[j].masked_fill(~dones[j], float("-inf")).amax(dim=1)
                best_live = scores[j].masked_fill(dones[j], float("-inf")).amax(dim=1)
                if collect:
                    if bool(ended.any()):
                        rows, beams = ended.nonzero(as_tuple=True)
                        pools[j].append((rows, seqs[j][rows, beams], scores[j][rows, beams]))
                    # go on while a live beam is within CANDIDATE_MARGIN of the best finished caption
                    stop = stop and bool((best_live < best_done - CANDIDATE_MARGIN).all())
                else:
                    stop = stop and bool((best_done >= best_live).all())
            gather = torch.cat(gathers)
            state = tuple(s[:, gather] for s in state) if isinstance(state, tuple) else state[:, gather]
            words = torch.cat(next_words)
            if stop:
                break
        out = []
        for score, seq in zip(scores, seqs):
            best = score.argmax(dim=1)  # [R]
            rows = seq[region[:, 0], best].tolist()
            out.append(([_strip(row) for row in rows], score[region[:, 0], best]))
        return (out, pools) if collect else out


def _rows(state, idx: Tensor):
    """Rows ``idx`` of an RNN state [layers, N, H] (LSTM: a tuple of two)."""
    return tuple(s[:, idx] for s in state) if isinstance(state, tuple) else state[:, idx]


def _strip(ids: list[int]) -> list[int]:
    """Word ids up to (not including) <end>, without padding."""
    out = []
    for i in ids:
        if i == END:
            break
        if i != PAD:
            out.append(i)
    return out
