"""Output tags shared by the transforms: every transform's dead letters come out under the same tag."""
DEAD_LETTER = 'dead_letter'
