from twisted.application.service import ServiceMaker

duct = ServiceMaker("duct", "duct.tap", "A monitoring agent and event router", "duct")
