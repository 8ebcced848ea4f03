"""Static reference data of the synthetic marketplace: countries, cards, categories, words.

Everything here is plain data so that the behaviour modules read as behaviour. Weights need
not sum to 1; they are used as relative weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Home countries of the marketplace's own users, weighted by share of users.
HOME_COUNTRIES: Final[tuple[str, ...]] = (
    "US",
    "GB",
    "DE",
    "FR",
    "NL",
    "CA",
    "AU",
    "IT",
    "ES",
    "PL",
)
HOME_COUNTRY_WEIGHTS: Final[tuple[float, ...]] = (
    0.34,
    0.12,
    0.10,
    0.08,
    0.04,
    0.08,
    0.06,
    0.06,
    0.07,
    0.05,
)

# Where attackers connect from: never a home country, so "new country" is a real signal.
ATTACKER_COUNTRIES: Final[tuple[str, ...]] = ("RU", "NG", "BR", "VN", "ID", "UA", "RO", "PH", "TR")

CURRENCY_BY_COUNTRY: Final[dict[str, str]] = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "NL": "EUR",
    "CA": "CAD",
    "AU": "AUD",
    "IT": "EUR",
    "ES": "EUR",
    "PL": "PLN",
}

# First octets of public IPv4 space, per country, so an address looks like it belongs where
# the event says it comes from. None of them is private, loopback, CGNAT or link-local
# (10, 100, 127, 169, 172, 192 are never used), so any second..fourth octet is public.
IP_FIRST_OCTETS: Final[dict[str, tuple[int, ...]]] = {
    "US": (23, 24, 50, 64, 67, 68, 71, 73, 75, 76, 96, 98, 99, 107, 108, 173, 174),
    "GB": (31, 51, 62, 81, 82, 86, 90, 109, 212),
    "DE": (46, 77, 79, 84, 87, 91, 93, 217),
    "FR": (2, 78, 80, 82, 88, 90, 92, 176),
    "NL": (31, 62, 77, 83, 84, 145, 213),
    "CA": (24, 70, 99, 142, 174, 184, 206),
    "AU": (1, 49, 58, 101, 110, 120, 121, 124),
    "IT": (2, 5, 79, 82, 87, 93, 151),
    "ES": (2, 31, 80, 81, 83, 88, 95),
    "PL": (31, 37, 46, 78, 83, 89, 178),
    "RU": (5, 31, 37, 46, 77, 85, 95, 178),
    "NG": (41, 102, 105, 129, 154, 197),
    "BR": (138, 177, 179, 186, 187, 189, 191, 200, 201),
    "VN": (14, 27, 42, 113, 115, 116, 117, 171),
    "ID": (36, 39, 103, 110, 114, 118, 125, 180, 182),
    "UA": (31, 37, 46, 77, 91, 93, 176, 178),
    "RO": (5, 31, 46, 79, 86, 89, 188),
    "PH": (49, 110, 112, 119, 120, 122, 124, 175),
    "TR": (31, 78, 85, 88, 94, 176, 178, 212),
}

# Hosting and VPN ranges: where scripted attacks run from.
HOSTING_FIRST_OCTETS: Final[tuple[int, ...]] = (45, 104, 138, 139, 159, 165, 167, 185, 188, 198)

# Issuer BINs of ordinary cards (Visa 4, Mastercard 51-55, Amex 34/37, Discover 6011).
CARD_BINS: Final[tuple[str, ...]] = (
    "400022",
    "414720",
    "421783",
    "426684",
    "431940",
    "438857",
    "446542",
    "453275",
    "459500",
    "476173",
    "485246",
    "492181",
    "510510",
    "517805",
    "522182",
    "530125",
    "542418",
    "548901",
    "552433",
    "371385",
    "376700",
    "601100",
)
# Prepaid and virtual-card BINs that card testers cycle through.
TESTING_BINS: Final[tuple[str, ...]] = (
    "404038",
    "423223",
    "435880",
    "487917",
    "533248",
    "537410",
    "559666",
)

NORMAL_DECLINE_REASONS: Final[tuple[str, ...]] = (
    "insufficient_funds",
    "do_not_honor",
    "expired_card",
    "card_declined",
)
TESTING_DECLINE_REASONS: Final[tuple[str, ...]] = (
    "card_declined",
    "incorrect_cvc",
    "invalid_number",
    "do_not_honor",
    "stolen_card",
    "expired_card",
    "incorrect_zip",
)
PAYMENT_ERROR_REASON: Final = "processor_unavailable"

EMAIL_DOMAINS: Final[tuple[str, ...]] = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "aol.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "libero.it",
    "wp.pl",
)
EMAIL_DOMAIN_WEIGHTS: Final[tuple[float, ...]] = (
    0.45,
    0.09,
    0.1,
    0.08,
    0.1,
    0.03,
    0.02,
    0.03,
    0.03,
    0.03,
    0.02,
    0.02,
)
DISPOSABLE_EMAIL_DOMAINS: Final[tuple[str, ...]] = (
    "mailinator.com",
    "guerrillamail.com",
    "tempmail.dev",
    "10minutemail.net",
    "yopmail.com",
    "sharklasers.com",
)


@dataclass(frozen=True, slots=True)
class Category:
    """A shop category: its price distribution and the words its listing titles use."""

    name: str
    shop_weight: float
    median_price: float
    price_sigma: float
    adjectives: tuple[str, ...]
    materials: tuple[str, ...]
    nouns: tuple[str, ...]


CATEGORIES: Final[tuple[Category, ...]] = (
    Category(
        "jewelry",
        0.2,
        45.0,
        0.8,
        ("Dainty", "Minimalist", "Boho", "Personalized", "Handmade", "Vintage Style"),
        ("Sterling Silver", "Gold Filled", "Rose Gold", "Moonstone", "Pearl", "Opal"),
        ("Ring", "Necklace", "Earrings", "Bracelet", "Pendant", "Anklet"),
    ),
    Category(
        "vintage",
        0.12,
        38.0,
        0.9,
        ("Retro", "Antique", "Mid Century", "1970s", "Art Deco", "Rare"),
        ("Brass", "Ceramic", "Leather", "Glass", "Teak", "Enamel"),
        ("Lamp", "Vase", "Camera", "Jacket", "Mirror", "Clock"),
    ),
    Category(
        "home",
        0.16,
        32.0,
        0.8,
        ("Rustic", "Scandinavian", "Farmhouse", "Modern", "Cozy", "Hand Thrown"),
        ("Linen", "Oak", "Stoneware", "Macrame", "Wool", "Concrete"),
        ("Pillow Cover", "Planter", "Wall Shelf", "Throw Blanket", "Mug", "Candle Holder"),
    ),
    Category(
        "art",
        0.1,
        60.0,
        1.0,
        ("Original", "Abstract", "Botanical", "Signed", "Minimalist", "Coastal"),
        ("Watercolor", "Oil", "Linocut", "Giclee", "Charcoal", "Acrylic"),
        ("Painting", "Print", "Poster", "Portrait", "Landscape", "Sketch"),
    ),
    Category(
        "clothing",
        0.14,
        30.0,
        0.6,
        ("Oversized", "Embroidered", "Hand Dyed", "Organic", "Cropped", "Unisex"),
        ("Cotton", "Linen", "Merino", "Denim", "Silk", "Hemp"),
        ("T-Shirt", "Sweater", "Dress", "Hoodie", "Scarf", "Cardigan"),
    ),
    Category(
        "toys",
        0.08,
        22.0,
        0.6,
        ("Montessori", "Wooden", "Handknit", "Personalized", "Eco", "Waldorf"),
        ("Beech", "Felt", "Cotton", "Maple", "Wool", "Silicone"),
        ("Stacking Toy", "Plush Bunny", "Puzzle", "Rattle", "Doll", "Train Set"),
    ),
    Category(
        "craft supplies",
        0.12,
        9.0,
        0.7,
        ("Bulk", "Assorted", "Premium", "Hand Dyed", "Pastel", "Metallic"),
        ("Glass", "Cotton", "Wool", "Brass", "Resin", "Polymer Clay"),
        ("Beads", "Yarn", "Charms", "Ribbon", "Buttons", "Findings"),
    ),
    Category(
        "electronics accessories",
        0.08,
        19.0,
        0.7,
        ("Custom", "Slim", "Engraved", "Magnetic", "Wireless", "Personalized"),
        ("Leather", "Walnut", "Bamboo", "Silicone", "Aluminum", "Cork"),
        ("Phone Case", "Laptop Sleeve", "Charging Stand", "Cable Organizer", "Airpods Case"),
    ),
)

TITLE_SUFFIXES: Final[tuple[str, ...]] = (
    "",
    "",
    "",
    " - Gift for Her",
    " - Gift for Him",
    " | Handmade",
    ", Set of 2",
    " - Ready to Ship",
    " - Made to Order",
)
# What fake-listing rings bolt onto one copied title to dodge exact-duplicate checks.
BAIT_TITLE_DECORATIONS: Final[tuple[str, ...]] = (
    "",
    " NEW",
    " !!",
    " - SALE",
    " Free Shipping",
    " 2026",
    " - Limited Stock",
    " HOT",
)
