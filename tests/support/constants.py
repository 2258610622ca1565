"""Names and values the test tiers share."""

from __future__ import annotations

# Extension ids are 32 letters a-p.
ORIGIN = "chrome-extension://" + "abcdefghijklmnop" * 2
OTHER_ORIGIN = "chrome-extension://" + "ponmlkjihgfedcba" * 2
UNLISTED_ORIGIN = "chrome-extension://" + "aaaabbbbccccddddeeeeffffgggghhhh"
SW_ORIGIN = "https://app.singlewindow.cn"  # an https Single Window page
CARD_PIN = "88888888"  # the simulated cards' PIN (all profiles but rsa2048: 00000000)
