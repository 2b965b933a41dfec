"""lmcourse: the helper package of the course *Language Models from Counting to GPUs*.

Each module holds one concept that a chapter builds from scratch and later chapters reuse; a module imports only
:mod:`lmcourse.core` and modules of its own or earlier chapters (the table is :data:`lmcourse.chapters.CHAPTER`):

- :mod:`lmcourse.core` -- the input checks every chapter shares (positive integers, real numbers, token ids)
- :mod:`lmcourse.chapters` -- which chapter introduces each module
- :mod:`lmcourse.data` -- the course corpora (download, SHA-256 check, cache, offline mirror)
- :mod:`lmcourse.runtime` -- device selection, CPU threads, seeding
- :mod:`lmcourse.metrics` -- perplexity and bits per character
- :mod:`lmcourse.tokenizers` -- character, word, byte-level BPE, WordPiece and Unigram tokenizers
- :mod:`lmcourse.ngram` -- n-gram language models: counting, smoothing, perplexity, sampling
- :mod:`lmcourse.autodiff` -- scalar reverse-mode autodiff, Neuron/Linear/MLP, softmax and cross-entropy
- :mod:`lmcourse.models` -- neural language models: the MLP LM (Bengio et al. 2003), the GPT and its variants
- :mod:`lmcourse.bptt` -- a NumPy RNN language model with hand-written backpropagation through time
- :mod:`lmcourse.rnn` -- RNN, LSTM and GRU cells from their equations, and recurrent language models
- :mod:`lmcourse.seq2seq` -- an encoder-decoder with and without additive attention, on a toy reversal task
- :mod:`lmcourse.attention` -- scaled dot-product attention, its masks, and multi-head attention
- :mod:`lmcourse.sampling` -- decoding: temperature, top-k, top-p, beam search, pass@k
- :mod:`lmcourse.train` -- the shared training loop, schedules and checkpoints
- :mod:`lmcourse.optim` -- Muon (orthogonalised momentum for weight matrices) with AdamW for the rest
- :mod:`lmcourse.efficiency` -- online softmax, tiled (FlashAttention-style) attention, FLOP accounting and MFU
- :mod:`lmcourse.inference` -- the KV cache and left-padded batches: the GPT as it generates
- :mod:`lmcourse.ddp` -- data-parallel training with DistributedDataParallel, launched by ``torchrun``
- :mod:`lmcourse.zoo` -- trained models shared between chapters: trained once on first use, then loaded
- :mod:`lmcourse.ladder` -- the capstone's perplexity ladder, the Penn Treebank history, a WikiText-2 recipe
- :mod:`lmcourse.finetune` -- fine-tuning for a task: the SMS Spam Collection's split, a GPT classifier, metrics
- :mod:`lmcourse.lora` -- low-rank adaptation (LoRA): the layer, adding it to a model, merging it back

Every neural language model of the course is called the same way::

    logits, loss = model(idx, targets=None)

``idx`` holds token ids (B, T) (for the MLP LM, the k-token windows (B, k)); ``logits`` are (B, T, |V|) (the MLP:
(B, |V|), the token after each window); ``loss`` is the mean cross-entropy in nats over the targets that are not
-1, or None without targets. A model can carry what it has read from one call to the next in a cache passed as
``cache=``: a recurrent network's hidden state (``model.new_cache(B)``, chapter 4) or a GPT's keys and values
(``CachedGPT(gpt).new_cache(B)`` of :mod:`lmcourse.inference`, chapter 10). :func:`lmcourse.sampling.generate`
decodes every model through this interface, and :func:`lmcourse.train.mean_loss` scores every model with it.
"""

__version__ = "0.1.0"
