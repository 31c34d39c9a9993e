"""A 20-camera traffic feed, for when the user's 11,508 frames are not at hand.

Two feeds (``SynthSpec.feed``):

- ``footage`` (the default): real fixed-camera road footage fetched at run time
  (``ipsp.preprocessing.footage``: OpenTrafficCam's test clips from PyPI, cars, a
  truck, a cyclist at a junction). Each camera plays one clip in time order from
  its own start frame (forward, then backward at the clip's end, so vehicles keep
  moving smoothly) through its own viewpoint (crop, zoom, small rotation, mirror),
  colour balance, haze, light drift, shake and sensor noise.
- ``photos``: the offline fallback, built from real photos that installed packages
  ship (the stereo motorcycle pair of scikit-image, and ``bus.jpg`` / ``zidane.jpg``
  of ``ultralytics`` when installed) with vehicles cut from them sliding along
  lanes. It does not look like road traffic; the CLI says so loudly when it has to
  fall back to it.

Nothing third-party is committed. JPEGs land at 100-250 KB (1280x720, quality 85).

Deterministic: frame ``k`` of camera ``c`` depends only on (seed, c, k) and the
set of available sources (recorded in ``.synth.json``), never on the number of
worker processes. ``corrupt=K`` adds K files of each bad kind the packer must
reject (see ``BAD_KINDS``), ``duplicates=D`` adds D byte-identical copies of
good frames under new names.

Modules: ``footage`` and ``photos`` (one per feed) build a camera's ``scene``,
``render`` draws and encodes one frame of either, ``feed`` writes the folder.
"""
