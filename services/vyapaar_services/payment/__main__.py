"""``python -m vyapaar_services.payment`` — run the payment service."""

from vyapaar_services.common.service import run_service
from vyapaar_services.payment.app import SERVICE, create_app

if __name__ == "__main__":
    run_service(SERVICE, create_app)
