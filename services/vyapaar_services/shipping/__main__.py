"""``python -m vyapaar_services.shipping`` — run the shipping service."""

from vyapaar_services.common.service import run_service
from vyapaar_services.shipping.app import SERVICE, create_app

if __name__ == "__main__":
    run_service(SERVICE, create_app)
