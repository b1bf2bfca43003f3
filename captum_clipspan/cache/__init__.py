"""The resumable, memory-mapped decomposition cache (image sources and batching:
:mod:`captum_clipspan.sources`).

The cache is a folder of ``.npy`` files written through memory maps, one batch at a time, so memory
stays bounded by a batch whatever the dataset size. ``meta.json`` (the settings, a hash of every
weight of the image tower, the image files) is written first and atomically, and the arrays' disk
space is reserved before any row is written. After every batch the arrays are flushed and
``progress.json`` is replaced atomically; an interrupted pass resumes from the last committed batch
and ends with the same contents as an uninterrupted one.

Each row also stores a digest of what it was computed from: the file's relative path, size and
mtime for an image folder, else the image's values and label. A pass that resumes, or reuses a
finished cache, checks them (every file of a folder; the first and last committed batch of other
sources) and refuses other images. Opening checks every array's header, dtype, shape and size, and
a lock file keeps a second writer out.

Every row of every array carries a checksum, written with it (``checksums.npy``, format 4): a
reader checks each row the first time it reads it, :meth:`DecompositionCache.verify` checks them
all, and a progress file that claims rows never written is refused at open and on resume. A
flipped bit, two arrays swapped or rows moved are an error naming the file, never data.

Under ``torch.distributed`` every process of the pass writes its own rows of the same files: the
rows are cut into the batches of a one-process pass, the batches not yet committed are shared out
in order, and each process commits its batches to its own ``progress.rank{r}.json``. First the
processes exchange what defines the pass (model fingerprint, image count and content digests, batch
size, layers, convention, dtype, granularity, folder, format) and all refuse, naming what differs,
unless they agree. The process of
rank 0 creates the files, holds the folder's lock (the others hold ``lock.rank{r}``) and, once every
batch is committed, folds the per-process files into ``progress.json``. Every batch is the same as
in one process, so the arrays are the same bit for bit, also after a resumed pass.

Modules, each importing only modules listed before it: :mod:`.batches` (row spans, batches),
:mod:`.fingerprint` (model fingerprint, row and source digests), :mod:`.format` (file names,
``meta.json``, array checks), :mod:`.checksums` (row checksums, checked reads), :mod:`.progress`
(committed rows), :mod:`.locks`, :mod:`.folder` (preparing a folder,
reserving disk), :mod:`.distributed` (the processes of a pass), :mod:`.reader`
(:class:`DecompositionCache`) and :mod:`.writer` (:func:`cache_decomposition`).
"""

from .fingerprint import DIGEST_SIZE, model_fingerprint
from .format import CACHE_VERSION, GRANULARITIES
from .reader import DecompositionCache
from .writer import cache_decomposition

__all__ = ["CACHE_VERSION", "DIGEST_SIZE", "GRANULARITIES", "DecompositionCache",
           "cache_decomposition", "model_fingerprint"]
