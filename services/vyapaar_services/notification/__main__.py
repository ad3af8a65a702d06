"""``python -m vyapaar_services.notification`` — run the notification service."""

from vyapaar_services.common.service import run_service
from vyapaar_services.notification.app import SERVICE, create_app

if __name__ == "__main__":
    run_service(SERVICE, create_app)
