"""Exits 0 when the service answers on its port."""
import os
import sys
import urllib.request

port = os.environ.get("PORT", "8080")
sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:%s/" % port, timeout=2).status == 200 else 1)
