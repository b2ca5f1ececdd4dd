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
        return _better(*self._beams(v, (1, beam_size), max_len))

    def beam_search_and_candidates(self, v: Tensor, beam_size: int | None, cand_v: Tensor,
                                   cand_beam_size: int | None = None, max_len: int | None = None):
        """:meth:`beam_search` of ``v`` and :meth:`candidates` of ``cand_v`` in one decoding loop (one RNN
        call per step for both: a small batch's step costs about the same whatever its rows), with the
        same results as the two calls. Returns (beam_search's pair, candidates' list)."""
        beam_size = beam_size or self.cfg.beam_size
        cand_beam_size = max(1, cand_beam_size or self.cfg.beam_size)
        plain = (1, beam_size) if beam_size > 1 else (1,)
        cands = (1, cand_beam_size) if cand_beam_size > 1 else (1,)
        results, pools = self._beams([v] * len(plain) + [cand_v] * len(cands), plain + cands, max_len,
                                     collect=[False] * len(plain) + [True] * len(cands))
        best = _better(*results[:len(plain)]) if beam_size > 1 else results[0]
        return best, _gather_candidates(results[len(plain):], pools[-1], cand_v.shape[0])

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
        return _gather_candidates(results, pools[-1], v.shape[0])

    def _beams(self, v, widths: tuple[int, ...], max_len: int | None = None, collect=False):
        """Plain beam searches of several widths, stepped together.

        The RNN runs once per step over the rows of every width (width k: R*k rows, region-major),
        skipping rows whose beam has finished or is dead (most rows after a few words: captions are
        short); each width keeps its own scores, finished flags and sequences. Returns one
        (word ids per region, FloatTensor[R] log-probability) pair per width.

        ``v`` is FloatTensor[R, D] (every width searches the same regions) or one such tensor per
        width (each width its own regions), and ``collect`` one flag or one per width.
        A width without ``collect`` stops (its rows leave the RNN) once its best caption is known.
        The widths with ``collect`` run on, together, while a live beam of one of them is within
        CANDIDATE_MARGIN of its region's best finished caption (or until ``max_len``), and each also
        returns the hypotheses that emitted <end>: with any ``collect`` the result is (pairs, pools),
        pools[j] a list of (region LongTensor[n], sequences LongTensor[n, step + 1], log-probabilities
        FloatTensor[n]) for width j (empty for a width without ``collect``).
        """
        max_len = max_len or self.cfg.max_len
        vs = list(v) if isinstance(v, (list, tuple)) else [v] * len(widths)
        collects = list(collect) if isinstance(collect, (list, tuple)) else [collect] * len(widths)
        any_collect = any(collects)
        sizes = [x.shape[0] for x in vs]
        dev = vs[0].device
        pools: list[list] = [[] for _ in widths]
        if sum(r * k for r, k in zip(sizes, widths)) == 0:
            empty = [([], x.new_zeros(0)) for x in vs]
            return (empty, pools) if any_collect else empty
        vk = torch.cat([x.repeat_interleave(k, dim=0) for x, k in zip(vs, widths)])  # [sum R_j*K_j, D]
        state = self._initial_state(vk)
        words = vk.new_full((vk.shape[0],), START, dtype=torch.long)
        scores, dones, seqs = [], [], []
        for x, k in zip(vs, widths):
            score = x.new_full((x.shape[0], k), float("-inf"))
            score[:, 0] = 0.0  # all beams start identical: keep one alive
            scores.append(score)
            dones.append(torch.zeros(x.shape[0], k, dtype=torch.bool, device=dev))
            seqs.append(x.new_zeros((x.shape[0], k, 0), dtype=torch.long))
        stopped = [r == 0 for r in sizes]  # a stopped width's rows leave the RNN
        # a finished beam continues with a single zero-cost <pad> so it keeps its place
        finished = vk.new_full((self.vocab_size,), float("-inf"))
        finished[PAD] = 0.0
        regions = [torch.arange(r, device=dev)[:, None] for r in sizes]
        for step in range(max_len):
            # finished beams (they only add <pad>) and dead ones (score -inf) need no RNN step
            need = torch.cat([(~d & (sc > float("-inf")) & (not stop)).view(-1)
                              for d, sc, stop in zip(dones, scores, stopped)])
            if bool(need.all()):
                logp_all, state = self._step(vk, words, state)
            else:
                idx = need.nonzero().squeeze(1)
                logp_need, state_need = self._step(vk[idx], words[idx], _rows(state, idx))
                logp_all = logp_need.new_zeros(vk.shape[0], self.vocab_size).index_copy_(0, idx, logp_need)
                state = (tuple(s.index_copy(1, idx, n) for s, n in zip(state, state_need))
                         if isinstance(state, tuple) else state.index_copy(1, idx, state_need))
            logp_all = self._mask(logp_all, step)
            gathers, next_words, offset = [], [], 0
            collect_stop = True
            parts = logp_all.split([r * k for r, k in zip(sizes, widths)])
            for j, (k, r, logp) in enumerate(zip(widths, sizes, parts)):
                if stopped[j]:  # keep its rows (and words) as they are
                    gathers.append(torch.arange(offset, offset + r * k, device=dev))
                    next_words.append(words[offset:offset + r * k])
                    offset += r * k
                    continue
                logp = torch.where(dones[j][..., None], finished, logp.view(r, k, -1))  # [R, K, V]
                cand = (scores[j][..., None] + logp).view(r, -1)  # [R, K*V]
                scores[j], flat = cand.topk(k, dim=1)  # [R, K]
                src, words2 = flat // self.vocab_size, flat % self.vocab_size
                seqs[j] = torch.cat([seqs[j].gather(1, src[..., None].expand(-1, -1, seqs[j].shape[2])),
                                     words2[..., None]], 2)
                ended = (words2 == END) & (scores[j] > float("-inf"))  # [R, K] finished at this step
                dones[j] = dones[j].gather(1, src) | (words2 == END)
                gathers.append((src + regions[j] * k).view(-1) + offset)
                next_words.append(words2.view(-1))
                offset += r * k
                # sums of log-probs only fall: stop once no live beam can beat a finished one
                best_done = scores[j].masked_fill(~dones[j], float("-inf")).amax(dim=1)
                best_live = scores[j].masked_fill(dones[j], float("-inf")).amax(dim=1)
                if collects[j]:
                    if bool(ended.any()):
                        rows, beams = ended.nonzero(as_tuple=True)
                        pools[j].append((rows, seqs[j][rows, beams], scores[j][rows, beams]))
                    # go on while a live beam is within CANDIDATE_MARGIN of the best finished caption
                    collect_stop = collect_stop and bool((best_live < best_done - CANDIDATE_MARGIN).all())
                elif bool((best_done >= best_live).all()):
                    stopped[j] = True
            if collect_stop:  # the collecting widths stop together
                stopped = [stop or c for stop, c in zip(stopped, collects)]
            gather = torch.cat(gathers)
            state = tuple(s[:, gather] for s in state) if isinstance(state, tuple) else state[:, gather]
            words = torch.cat(next_words)
            if all(stopped):
                break
        out = []
        for score, seq, region in zip(scores, seqs, regions):
            best = score.argmax(dim=1)  # [R]
            rows = seq[region[:, 0], best].tolist()
            out.append(([_strip(row) for row in rows], score[region[:, 0], best]))
        return (out, pools) if any_collect else out


def _better(greedy, beam) -> tuple[list[list[int]], Tensor]:
    """Per region the higher-scoring of greedy decoding's and the beam's caption."""
    (greedy_ids, greedy_score), (beam_ids, beam_score) = greedy, beam
    better = beam_score > greedy_score
    ids = [b if keep else g for b, g, keep in zip(beam_ids, greedy_ids, better.tolist())]
    return ids, torch.where(better, beam_score, greedy_score)


def _gather_candidates(results, pool, num_regions: int) -> list[list[tuple[list[int], float]]]:
    """Per region its distinct candidates, most probable first: every width's best (maybe cut at
    max_len) and every hypothesis of ``pool`` (the widest beam's) that emitted <end>."""
    out: list[dict[tuple[int, ...], float]] = [{} for _ in range(num_regions)]
    for best_ids, best_score in results:
        for r, (ids, score) in enumerate(zip(best_ids, best_score.tolist())):
            out[r].setdefault(tuple(ids), score)
    for rows, seqs, scores in pool:
        for r, seq, score in zip(rows.tolist(), seqs.tolist(), scores.tolist()):
            out[r].setdefault(tuple(_strip(seq)), score)
    return [sorted(((list(k), sc) for k, sc in d.items()), key=lambda c: -c[1]) for d in out]


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
