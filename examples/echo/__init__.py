"""Echo component: the smallest useful block (returns its input with `"echo": true`)."""
