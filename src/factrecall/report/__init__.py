"""Drawing a study: the paper's figures, the self-contained report page and the inspection fragments."""
