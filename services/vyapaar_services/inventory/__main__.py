"""``python -m vyapaar_services.inventory`` — run the inventory service."""

from vyapaar_services.common.service import run_service
from vyapaar_services.inventory.app import SERVICE, create_app

if __name__ == "__main__":
    run_service(SERVICE, create_app)
