"""``python -m vyapaar_services.gateway`` — run the gateway."""

from vyapaar_services.gateway.app import main

if __name__ == "__main__":
    main()
