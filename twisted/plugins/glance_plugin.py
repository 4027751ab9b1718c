from twisted.application.service import ServiceMaker

glance = ServiceMaker(
    "glancetx",
    "glancetx.tap",
    "The OpenStack Images v1 API (Glance) on one Twisted reactor.",
    "glance",
)
