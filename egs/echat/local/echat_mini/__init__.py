"""EChat-mini: a small synthetic empathetic spoken-dialogue corpus made with espeak-ng, flite and numpy.

Modules: ``content.yaml`` + ``replies`` (sentences and reply composition), ``identity`` (self-awareness
turns), ``voices`` (user voice settings, emotion styles, the assistant voice), ``events`` (background sounds and
mixing), ``plan`` (splits and the per-example state), ``render`` (parallel synthesis into data.list records).
"""

VERSION = "1.2"  # 1.1: identity turns; 1.2: held-out voices leave every (engine, age, gender) in train
