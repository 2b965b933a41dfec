"""lmcourse: the helper package of the course *Language Models from Counting to GPUs*.

Each module holds one concept that a chapter builds from scratch and later chapters reuse:

- :mod:`lmcourse.data` -- the course corpora (download, SHA-256 check, cache, offline mirror)
- :mod:`lmcourse.runtime` -- device selection, CPU threads, seeding
- :mod:`lmcourse.metrics` -- perplexity and bits per character
- :mod:`lmcourse.tokenizers` -- tokenizers, starting with characters
- :mod:`lmcourse.ngram` -- n-gram language models: counting, smoothing, perplexity, sampling
- :mod:`lmcourse.autodiff` -- scalar reverse-mode autodiff, Neuron/Linear/MLP, softmax and cross-entropy
- :mod:`lmcourse.models` -- neural language models: the MLP LM (Bengio et al. 2003)
- :mod:`lmcourse.bptt` -- a NumPy RNN language model with hand-written backpropagation through time
- :mod:`lmcourse.rnn` -- RNN, LSTM and GRU cells from their equations, and recurrent language models
- :mod:`lmcourse.train` -- the shared training loop, schedules and checkpoints
"""

__version__ = "0.1.0"
